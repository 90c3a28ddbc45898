// The node side of tests/clients/js_harness.py: read the parameters the trial test
// passed, run a scenario against a real Roost with matrix-js-sdk, write one JSON result.
//
// A scenario module calls `runScenario(async (params, result) => {...})`. Whatever it
// puts into `result` is written to the file the test named (ROOST_JS_RESULT), so the
// SDK's console logging never mixes with the answer. A thrown error is written as
// `result.error` (message, HTTP status, errcode, stack) and the process exits 1.

import { writeFileSync } from "node:fs";

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

export { sdk };

/** The parameters the test passed (JSON in ROOST_JS_PARAMS); `base_url` is Roost's. */
export const params = JSON.parse(process.env.ROOST_JS_PARAMS ?? "{}");

logger.setLevel(params.log_level ?? "warn");

/** An error as plain JSON: what a Matrix error carries, or the message and stack. */
export function describeError(err) {
    if (err === null || typeof err !== "object") return { message: String(err) };
    const out = { message: err.message ?? String(err), name: err.name };
    if (err.httpStatus !== undefined) out.httpStatus = err.httpStatus;
    if (err.errcode !== undefined) out.errcode = err.errcode;
    if (err.data !== undefined) out.data = err.data;
    if (err.url !== undefined) out.url = err.url;
    if (err.stack) out.stack = String(err.stack).split("\n").slice(0, 8).join("\n");
    return out;
}

/**
 * Run one named step; record `{ok: true, value}` or `{ok: false, error}` in
 * `result.steps[name]`. Returns the value, or undefined when the step failed, so a
 * scenario can go on with the parts that do not depend on it.
 */
export async function step(result, name, fn) {
    result.steps ??= {};
    try {
        const value = await fn();
        result.steps[name] = { ok: true, value: value === undefined ? null : value };
        return value;
    } catch (err) {
        result.steps[name] = { ok: false, error: describeError(err) };
        return undefined;
    }
}

/**
 * Resolve when `emitter` emits `event` with arguments for which `predicate` is true.
 * `guardMs` only stops a stuck scenario (the reason names what it waited for); it is
 * not an assertion about speed.
 */
export function waitForEvent(emitter, event, predicate, what, guardMs = 60000) {
    return new Promise((resolve, reject) => {
        const onEvent = (...args) => {
            let matched = false;
            try {
                matched = predicate(...args);
            } catch (err) {
                cleanup();
                reject(err);
                return;
            }
            if (matched) {
                cleanup();
                resolve(args);
            }
        };
        const timer = setTimeout(() => {
            cleanup();
            reject(new Error(`gave up waiting for ${what}`));
        }, guardMs);
        const cleanup = () => {
            clearTimeout(timer);
            emitter.removeListener(event, onEvent);
        };
        emitter.on(event, onEvent);
    });
}

/** Register `username` through the dummy flow (what Roost's test harness does too). */
export async function register(baseUrl, username, password) {
    const anon = sdk.createClient({ baseUrl });
    return anon.registerRequest({
        username,
        password,
        auth: { type: "m.login.dummy" },
        initial_device_display_name: `${username}'s js-sdk`,
    });
}

/** Log in with a password; returns the login response (user_id, device_id, access_token). */
export async function login(baseUrl, username, password, deviceName) {
    const anon = sdk.createClient({ baseUrl });
    return anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password,
        initial_device_display_name: deviceName ?? `${username}'s js-sdk`,
    });
}

/**
 * A logged-in MatrixClient for `username` (registered first unless `register: false`).
 * With `crypto: true` its Rust crypto is started, kept in memory (no IndexedDB in node).
 */
export async function makeClient(baseUrl, username, options = {}) {
    const password = options.password ?? `pw-${username}-roost`;
    if (options.register !== false) await register(baseUrl, username, password);
    const session = await login(baseUrl, username, password, options.deviceName);
    const client = sdk.createClient({
        baseUrl,
        userId: session.user_id,
        deviceId: session.device_id,
        accessToken: session.access_token,
        ...(options.clientOptions ?? {}),
    });
    if (options.crypto) await client.initRustCrypto({ useIndexedDB: false });
    return client;
}

/**
 * Start the client's sync loop and resolve once it reaches PREPARED (the first sync
 * processed). Rejects at once when a request of the start answers 404 (the SDK would
 * retry it forever), or with the states seen when `guardMs` ran out.
 */
export async function startClient(client, startOptions = {}, guardMs = 60000) {
    const states = [];
    const prepared = new Promise((resolve, reject) => {
        const onSync = (state, _prev, data) => {
            // Each state once in order, and each distinct error once: a client that retries
            // a failing request forever would otherwise fill the report.
            const seen = state === "ERROR" && data?.error ? `ERROR: ${data.error.message ?? data.error}` : state;
            if (!states.includes(seen)) states.push(seen);
            if (state === "ERROR" && data?.error?.httpStatus === 404) {
                // An endpoint the server does not have: the SDK would retry it forever.
                client.removeListener(sdk.ClientEvent.Sync, onSync);
                clearTimeout(timer);
                client.stopClient();
                reject(new Error(`the sync loop cannot start: ${data.error.message}`));
            } else if (state === "PREPARED") {
                client.removeListener(sdk.ClientEvent.Sync, onSync);
                clearTimeout(timer);
                resolve(states);
            }
        };
        const timer = setTimeout(() => {
            client.removeListener(sdk.ClientEvent.Sync, onSync);
            reject(new Error(`the sync loop did not reach PREPARED; states seen: ${JSON.stringify(states)}`));
        }, guardMs);
        client.on(sdk.ClientEvent.Sync, onSync);
    });
    await client.startClient({ initialSyncLimit: 20, ...startOptions });
    return prepared;
}

/**
 * Run a scenario: `fn(params, result)` fills `result`; it is written to ROOST_JS_RESULT
 * and the process exits (0, or 1 with `result.error` when `fn` threw). Clients the
 * scenario registers with `cleanup` are stopped first.
 */
export async function runScenario(fn) {
    const result = {};
    const clients = [];
    const cleanup = (client) => {
        clients.push(client);
        return client;
    };
    let code = 0;
    try {
        await fn(params, result, cleanup);
    } catch (err) {
        result.error = describeError(err);
        code = 1;
    }
    for (const client of clients) {
        try {
            client.stopClient();
        } catch {
            // stopping is best effort; the process exits next
        }
    }
    writeFileSync(process.env.ROOST_JS_RESULT ?? "/dev/stdout", JSON.stringify(result));
    process.exit(code);
}

/**
 * Resolve once `predicate()` is true, checking it now and after every sync and every
 * timeline or notification-count change of `client`. `guardMs` only stops a stuck
 * scenario; the rejection says what was awaited and what `describe()` saw last.
 */
export function until(client, predicate, what, describe = () => null, guardMs = 60000) {
    return new Promise((resolve, reject) => {
        const events = [
            sdk.ClientEvent.Sync,
            sdk.RoomEvent.Timeline,
            sdk.RoomEvent.UnreadNotifications,
            sdk.RoomEvent.LocalEchoUpdated,
            sdk.RoomEvent.Receipt,
        ];
        const check = () => {
            let value;
            try {
                value = predicate();
            } catch (err) {
                finish();
                reject(err);
                return;
            }
            if (value) {
                finish();
                resolve(value);
            }
        };
        const timer = setTimeout(() => {
            finish();
            reject(new Error(`gave up waiting for ${what}; last seen: ${JSON.stringify(describe())}`));
        }, guardMs);
        const finish = () => {
            clearTimeout(timer);
            for (const event of events) client.removeListener(event, check);
        };
        for (const event of events) client.on(event, check);
        check();
    });
}
