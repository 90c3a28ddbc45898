// Threads as Element uses them (tests/clients/test_js_sdk_threads.py): the SDK with
// threadSupport asks /sync for unread_thread_notifications; Bob replies in a thread of
// Alice's message, mentioning her; the counts land on the thread, not the main timeline;
// Alice's threaded read receipt clears them; a fresh client lists the thread via /threads.
import { makeClient, runScenario, sdk, startClient, step, until } from "./lib/harness.mjs";

const HIGHLIGHT = sdk.NotificationCountType.Highlight;
const TOTAL = sdk.NotificationCountType.Total;

function counts(room, rootId) {
    return {
        thread: { total: room.getThreadUnreadNotificationCount(rootId, TOTAL), highlight: room.getThreadUnreadNotificationCount(rootId, HIGHLIGHT) },
        main: { total: room.getRoomUnreadNotificationCount(TOTAL), highlight: room.getRoomUnreadNotificationCount(HIGHLIGHT) },
    };
}

await runScenario(async (params, result, cleanup) => {
    const base = params.base_url;
    const alice = cleanup(await makeClient(base, "alice"));
    const bob = cleanup(await makeClient(base, "bob"));
    const aliceId = alice.getUserId();

    const started = await step(result, "start", async () => {
        await startClient(alice, { threadSupport: true });
        return { supports_threads: alice.supportsThreads() };
    });
    if (!started) return;

    const { room_id: roomId } = await alice.createRoom({ name: "Threads", invite: [bob.getUserId()] });
    await bob.joinRoom(roomId);
    const { event_id: rootId } = await alice.sendTextMessage(roomId, "thread root");
    await until(alice, () => alice.getRoom(roomId)?.findEventById(rootId), "the thread root in Alice's timeline");
    const room = alice.getRoom(roomId);

    const replies = await step(result, "replies", async () => {
        const inThread = (body, extra = {}) => ({
            msgtype: "m.text",
            body,
            "m.relates_to": { rel_type: "m.thread", event_id: rootId, is_falling_back: true, "m.in_reply_to": { event_id: rootId } },
            ...extra,
        });
        const first = await bob.sendMessage(roomId, inThread("alice: in the thread", { "m.mentions": { user_ids: [aliceId] } }));
        const second = await bob.sendMessage(roomId, inThread("and more"));
        await until(alice, () => [first, second].every((r) => room.getThread(rootId)?.findEventById(r.event_id)),
            "Bob's replies in Alice's thread", () => room.getThread(rootId)?.length ?? null);
        const thread = room.getThread(rootId);
        return {
            ids: [first.event_id, second.event_id],
            thread_length: thread.length,
            // The SDK may or may not keep the root in the thread's timeline: replies only.
            thread_replies: thread.events.filter((e) => e.getId() !== rootId).map((e) => e.getContent().body),
        };
    });
    if (!replies) return;

    await step(result, "thread_counts", async () => {
        await until(alice, () => room.getThreadUnreadNotificationCount(rootId, HIGHLIGHT) === 1,
            "the thread's highlight count 1", () => counts(room, rootId), 30000);
        return counts(room, rootId);
    });

    await step(result, "threaded_receipt", async () => {
        const last = room.getThread(rootId).findEventById(replies.ids[1]);
        await alice.sendReadReceipt(last, sdk.ReceiptType.Read);
        await until(alice, () => room.getThreadUnreadNotificationCount(rootId, TOTAL) === 0
            && room.getThreadUnreadNotificationCount(rootId, HIGHLIGHT) === 0,
            "the thread's counts cleared by the threaded receipt", () => counts(room, rootId), 30000);
        return counts(room, rootId);
    });

    alice.stopClient();
    await step(result, "thread_list", async () => {
        const fresh = cleanup(sdk.createClient({
            baseUrl: base, userId: aliceId, deviceId: alice.getDeviceId(), accessToken: alice.getAccessToken(),
        }));
        await startClient(fresh, { threadSupport: true, initialSyncLimit: 1 });
        const freshRoom = fresh.getRoom(roomId);
        await freshRoom.fetchRoomThreads();
        const threads = freshRoom.getThreads();
        const raw = await fresh.http.authedRequest("GET", `/rooms/${encodeURIComponent(roomId)}/threads`, undefined, undefined, { prefix: "/_matrix/client/v1" });
        return { threads: threads.map((t) => ({ id: t.id, length: t.length })), raw };
    });
    result.root_id = rootId;
});
