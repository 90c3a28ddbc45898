// A whole matrix-js-sdk client start against Roost, then the everyday use of a room
// (tests/clients/test_js_sdk_start.py). Alice runs the SDK's sync loop; Bob acts
// through the same SDK without one. Each step is recorded on its own; `stop_after`
// ends the scenario after the named step; `skip` lists steps not to run.
//
// start     login, startClient (versions, push rules, filter, initial sync) to SYNCING
// room      Alice creates a room and invites Bob, who joins
// send      Alice sends; her timeline shows the server's echo (the sync loop at work)
// pusher    (with `gateway_url`) Alice sets an http pusher to that push gateway
// mention   Bob sends 24 messages then mentions Alice; her sync loop receives it
// members   (with `lazy_load_members`) a fresh lazy-loading client loads the member list
// highlight Alice's room shows highlight_count 1 from the server; the SDK's own push
//           rule evaluation marks the mention as a highlight
// receipt   Alice's read receipt on the mention clears the room's counts
// scrollback a fresh client for Alice starts with 5 events per room and pages back
//           with the token its initial sync gave, to the room's creation
import { makeClient, runScenario, sdk, startClient, step, until } from "./lib/harness.mjs";

const HIGHLIGHT = sdk.NotificationCountType.Highlight;
const TOTAL = sdk.NotificationCountType.Total;
const FILLERS = 24;

function counts(room) {
    if (!room) return null;
    return { highlight: room.getUnreadNotificationCount(HIGHLIGHT), total: room.getUnreadNotificationCount(TOTAL) };
}

function liveEvents(room) {
    return room.getLiveTimeline().getEvents();
}

await runScenario(async (params, result, cleanup) => {
    const base = params.base_url;
    const stopAfter = params.stop_after;
    const done = (name) => stopAfter === name || !result.steps[name]?.ok;
    // Element starts with lazy loading of members; `lazy_load_members` does the same.
    const lazy = params.lazy_load_members === true;

    const alice = cleanup(await makeClient(base, "alice"));
    const bob = cleanup(await makeClient(base, "bob"));
    const aliceId = alice.getUserId();

    await step(result, "start", async () => {
        const states = await startClient(alice, { initialSyncLimit: 20, lazyLoadMembers: lazy });
        await until(alice, () => alice.getSyncState() === "SYNCING", "the SYNCING state",
            () => alice.getSyncState());
        return { states, sync_state: alice.getSyncState(), push_rules_loaded: !!alice.pushRules };
    });
    if (done("start")) return;

    const roomId = await step(result, "room", async () => {
        const { room_id: id } = await alice.createRoom({ name: "Roost check", invite: [bob.getUserId()] });
        await bob.joinRoom(id);
        await until(alice, () => alice.getRoom(id)?.getMember(bob.getUserId())?.membership === "join",
            "Bob's join in Alice's sync", () => alice.getRoom(id)?.getMember(bob.getUserId())?.membership);
        return id;
    });
    if (done("room")) return;

    await step(result, "send", async () => {
        const { event_id: eventId } = await alice.sendTextMessage(roomId, "hello bob");
        const room = alice.getRoom(roomId);
        await until(alice, () => liveEvents(room).some((e) => e.getId() === eventId && !e.status),
            "the echo of Alice's message", () => liveEvents(room).slice(-3).map((e) => [e.getId(), e.status]));
        return { event_id: eventId, counts: counts(room) };
    });
    if (done("send")) return;

    if (params.gateway_url) {
        // A phone's pusher, as Element sets one: Roost must push Alice's notifications
        // to this gateway (event_id_only, what mobile apps use).
        await step(result, "pusher", () => alice.setPusher({
            kind: "http",
            app_id: "org.roost.jscheck",
            app_display_name: "Roost check",
            device_display_name: "node",
            pushkey: "js-pushkey",
            lang: "en",
            data: { url: params.gateway_url, format: "event_id_only" },
        }));
        if (done("pusher")) return;
    }

    const mentionId = await step(result, "mention", async () => {
        for (let i = 0; i < FILLERS; i++) await bob.sendTextMessage(roomId, `filler ${i}`);
        const { event_id: eventId } = await bob.sendMessage(roomId, {
            msgtype: "m.text",
            body: "alice: are you there?",
            "m.mentions": { user_ids: [aliceId] },
        });
        const room = alice.getRoom(roomId);
        await until(alice, () => room.findEventById(eventId), "Bob's mention in Alice's timeline");
        return eventId;
    });
    if (done("mention")) return;

    if (lazy) {
        await step(result, "members", async () => {
            // A fresh client with lazy loading knows only the members it has seen speak;
            // the room's member list comes from GET /rooms/{roomId}/members.
            const fresh = cleanup(sdk.createClient({
                baseUrl: base, userId: aliceId, deviceId: alice.getDeviceId(), accessToken: alice.getAccessToken(),
            }));
            await startClient(fresh, { initialSyncLimit: 1, lazyLoadMembers: true });
            const room = fresh.getRoom(roomId);
            const before = room.getJoinedMembers().map((m) => m.userId).sort();
            await room.loadMembersIfNeeded();
            const after = room.getJoinedMembers().map((m) => m.userId).sort();
            fresh.stopClient();
            return { before, after };
        });
        if (stopAfter === "members") return;
    }

    const skip = new Set(params.skip ?? []);
    if (!skip.has("highlight")) await step(result, "highlight", async () => {
        const room = alice.getRoom(roomId);
        await until(alice, () => room.getUnreadNotificationCount(HIGHLIGHT) === 1,
            "highlight_count 1 for the mention", () => counts(room), 30000);
        const actions = alice.getPushActionsForEvent(room.findEventById(mentionId), true);
        return { counts: counts(room), sdk_actions: actions };
    });
    if (stopAfter === "highlight") return;

    if (!skip.has("receipt")) await step(result, "receipt", async () => {
        const room = alice.getRoom(roomId);
        const before = counts(room);
        await alice.sendReadReceipt(room.findEventById(mentionId), sdk.ReceiptType.Read);
        await until(alice, () => room.getUnreadNotificationCount(TOTAL) === 0
            && room.getUnreadNotificationCount(HIGHLIGHT) === 0,
            "the counts cleared by the receipt", () => counts(room), 30000);
        return { before, after: counts(room) };
    });
    if (stopAfter === "receipt") return;

    alice.stopClient();
    await step(result, "scrollback", async () => {
        const fresh = cleanup(sdk.createClient({
            baseUrl: base,
            userId: aliceId,
            deviceId: alice.getDeviceId(),
            accessToken: alice.getAccessToken(),
        }));
        await startClient(fresh, { initialSyncLimit: 5, lazyLoadMembers: lazy });
        const room = fresh.getRoom(roomId);
        if (!room) throw new Error("the room is not in the fresh client's initial sync");
        const timeline = room.getLiveTimeline();
        const initial = liveEvents(room).map((e) => e.getId());
        const initialToken = timeline.getPaginationToken(sdk.EventTimeline.BACKWARDS);
        let pages = 0;
        while (timeline.getPaginationToken(sdk.EventTimeline.BACKWARDS) && pages < 40) {
            await fresh.scrollback(room, 10);
            pages += 1;
            if (liveEvents(room)[0]?.getType() === "m.room.create") break;
        }
        const events = liveEvents(room);
        return {
            initial_count: initial.length,
            initial_token: initialToken,
            pages,
            types: events.map((e) => e.getType()),
            ids: events.map((e) => e.getId()),
            bodies: events.filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body),
            highlight_after_restart: counts(room),
        };
    });
});
