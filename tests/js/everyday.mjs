// What Element does every day beyond sending (tests/clients/test_js_sdk_everyday.py),
// each through matrix-js-sdk with Alice's sync loop watching the result arrive: login
// flows, room tags, read markers, search, ignoring a user, typing, a display name change.
// `only` names the parts to run (all by default).
import { makeClient, runScenario, sdk, startClient, step, until } from "./lib/harness.mjs";

await runScenario(async (params, result, cleanup) => {
    const base = params.base_url;
    const only = new Set(params.only ?? ["login_flows", "tags", "read_markers", "search", "ignore", "typing", "displayname"]);
    const alice = cleanup(await makeClient(base, "alice"));
    const bob = cleanup(await makeClient(base, "bob"));
    const bobId = bob.getUserId();
    await startClient(alice);
    const { room_id: roomId } = await alice.createRoom({ name: "Everyday", invite: [bobId] });
    await bob.joinRoom(roomId);
    await until(alice, () => alice.getRoom(roomId)?.getMember(bobId)?.membership === "join", "Bob's join");
    const room = alice.getRoom(roomId);
    const { event_id: firstId } = await bob.sendTextMessage(roomId, "a pineapple on the table");
    await until(alice, () => room.findEventById(firstId), "Bob's first message");

    if (only.has("login_flows")) {
        await step(result, "login_flows", async () => {
            const { flows } = await sdk.createClient({ baseUrl: base }).loginFlows();
            return flows.map((f) => f.type);
        });
    }

    if (only.has("tags")) {
        await step(result, "tags", async () => {
            await alice.setRoomTag(roomId, "m.favourite", { order: 0.5 });
            await until(alice, () => room.tags["m.favourite"]?.order === 0.5, "the tag in sync", () => room.tags);
            const tagged = structuredClone(room.tags);
            await alice.deleteRoomTag(roomId, "m.favourite");
            await until(alice, () => !room.tags["m.favourite"], "the tag's removal in sync", () => room.tags);
            return { tagged, after: room.tags };
        });
    }

    if (only.has("read_markers")) {
        await step(result, "read_markers", async () => {
            await alice.setRoomReadMarkers(roomId, firstId, room.findEventById(firstId));
            await until(alice, () => room.getAccountData("m.fully_read")?.getContent().event_id === firstId,
                "m.fully_read in the room's account data", () => room.getAccountData("m.fully_read")?.getContent());
            await until(alice, () => room.getEventReadUpTo(alice.getUserId()) === firstId,
                "Alice's m.read receipt in sync", () => room.getEventReadUpTo(alice.getUserId()));
            return { fully_read: room.getAccountData("m.fully_read").getContent().event_id, read_up_to: room.getEventReadUpTo(alice.getUserId()) };
        });
    }

    if (only.has("search")) {
        await step(result, "search", async () => {
            await bob.sendTextMessage(roomId, "no fruit here");
            const found = await alice.searchRoomEvents({ term: "pineapple" });
            return found.results.map((r) => ({ id: r.context.getEvent().getId(), body: r.context.getEvent().getContent().body }));
        });
    }

    if (only.has("ignore")) {
        await step(result, "ignore", async () => {
            await alice.setIgnoredUsers([bobId]);
            await until(alice, () => alice.getIgnoredUsers().includes(bobId), "m.ignored_user_list in sync",
                () => alice.getIgnoredUsers());
            const { event_id: ignoredId } = await bob.sendTextMessage(roomId, "you will not see this");
            const { event_id: markerId } = await alice.sendTextMessage(roomId, "after Bob's message");
            await until(alice, () => room.findEventById(markerId) && !room.findEventById(markerId).status,
                "Alice's own later message");
            return { ignored: alice.getIgnoredUsers(), ignored_event_seen: !!room.findEventById(ignoredId) };
        });
    }

    if (only.has("typing")) {
        await step(result, "typing", async () => {
            await bob.sendTyping(roomId, true, 20000);
            await until(alice, () => room.getMember(bobId)?.typing === true, "Bob typing", () => room.getMember(bobId)?.typing);
            await bob.sendTyping(roomId, false);
            await until(alice, () => room.getMember(bobId)?.typing === false, "Bob no longer typing");
            return true;
        });
    }

    if (only.has("displayname")) {
        await step(result, "displayname", async () => {
            await bob.setDisplayName("Bobby");
            await until(alice, () => room.getMember(bobId)?.name === "Bobby", "Bob's new name in the room",
                () => room.getMember(bobId)?.name);
            return room.getMember(bobId).name;
        });
    }
});
