// The harness's own check (tests/clients/test_js_harness.py): matrix-js-sdk registers,
// logs in, creates a room and sends a message through Roost; with `fail_on` set it
// calls that path and lets the Matrix error escape, to show how failures come back.
import { makeClient, runScenario } from "./lib/harness.mjs";

await runScenario(async (params, result) => {
    if (params.fail_on) {
        const client = await makeClient(params.base_url, "carol");
        await client.http.authedRequest("GET", params.fail_on);
        return;
    }
    const client = await makeClient(params.base_url, "alice");
    result.whoami = await client.whoami();
    const { room_id: roomId } = await client.createRoom({ name: "harness" });
    const { event_id: eventId } = await client.sendTextMessage(roomId, "hello from node");
    result.room_id = roomId;
    result.event_id = eventId;
    result.access_token = client.getAccessToken();
});
