// Registration as a real client does it (tests/clients/test_js_sdk_register.py): the
// first POST /register carries no `auth`, the server answers 401 with its flows and a
// session, the client asks for the session's state (Cinny does), and completes
// m.login.dummy in that session.
import { runScenario, sdk, step } from "./lib/harness.mjs";

await runScenario(async (params, result) => {
    const anon = sdk.createClient({ baseUrl: params.base_url });
    const body = { username: "dora", password: "pw-dora-roost", initial_device_display_name: "js" };
    await step(result, "first_request", async () => {
        try {
            await anon.registerRequest(body);
        } catch (err) {
            return { httpStatus: err.httpStatus, errcode: err.errcode ?? null, data: err.data };
        }
        throw new Error("POST /register without auth succeeded; it must answer 401 with the flows");
    });
    const first = result.steps.first_request;
    const session = first.ok ? first.value.data?.session : undefined;
    // What Cinny and matrix-js-sdk's InteractiveAuth send next: the session alone, to learn
    // its state. The answer is the same 401 (no stage failed, so no errcode).
    await step(result, "session_only", async () => {
        if (session === undefined) throw new Error("the 401 carried no session");
        try {
            await anon.registerRequest({ ...body, auth: { session } });
        } catch (err) {
            return { httpStatus: err.httpStatus, errcode: err.errcode ?? null, data: err.data };
        }
        throw new Error("POST /register with a bare session succeeded without completing a stage");
    });
    const registered = await step(result, "dummy_in_session", async () => {
        if (session === undefined) throw new Error("the 401 carried no session");
        return anon.registerRequest({ ...body, auth: { type: "m.login.dummy", session } });
    });
    if (!registered) return;
    await step(result, "profile", async () => {
        const client = sdk.createClient({
            baseUrl: params.base_url,
            userId: registered.user_id,
            accessToken: registered.access_token,
        });
        return client.getProfileInfo(registered.user_id);
    });
});
