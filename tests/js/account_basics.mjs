// What matrix-js-sdk reads before its first /sync, one step each
// (tests/clients/test_js_sdk_start.py): push rules, capabilities, a filter round trip.
import { makeClient, runScenario, step } from "./lib/harness.mjs";

await runScenario(async (params, result) => {
    const client = await makeClient(params.base_url, "erin");
    await step(result, "push_rules", () => client.getPushRules());
    await step(result, "capabilities", () => client.getCapabilities());
    await step(result, "filter", async () => {
        const definition = {
            room: { timeline: { limit: 7 }, state: { lazy_load_members: true } },
            presence: { not_types: ["*"] },
        };
        const created = await client.createFilter(definition);
        const fetched = await client.getFilter(client.getUserId(), created.filterId, false);
        return { filter_id: created.filterId, definition: fetched.getDefinition() };
    });
});
