// Drive a Cinny build in headless Debian Chromium against Roost, as a new user would:
// register, log in again in a fresh browser profile, create a room, send a message and
// see it in the timeline; then the same in an encrypted room, which a second user joins
// in their own Cinny and must read (decrypted) what is sent next. Screenshots and a JSON
// report go to --out. Run by contrib/cinny/check.sh (docs/clients.md).
//
//   node drive.mjs --cinny http://127.0.0.1:18080 --out DIR [--user NAME] [--chromium PATH]
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { chromium } from "playwright-core";

const { values: args } = parseArgs({
    options: {
        cinny: { type: "string" },
        out: { type: "string" },
        user: { type: "string", default: `cinny${Date.now() % 1000000}` },
        password: { type: "string", default: "roost-cinny-check-1" },
        chromium: { type: "string", default: "/usr/bin/chromium" },
        step_ms: { type: "string", default: "60000" },
    },
});
if (!args.cinny || !args.out) {
    console.error("usage: node drive.mjs --cinny URL --out DIR [--user NAME] [--chromium PATH]");
    process.exit(2);
}
mkdirSync(args.out, { recursive: true });
const STEP_MS = Number(args.step_ms);

// The flags this machine needs (docs/clients.md): no sandbox as root, no GPU, and no
// background connections to Google's services, which the closed network refuses.
const CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const report = { user: args.user, steps: [], console_errors: [], failed_requests: {} };
let shot = 0;

async function screenshot(page, name) {
    shot += 1;
    const file = join(args.out, `${String(shot).padStart(2, "0")}-${name}.png`);
    await page.screenshot({ path: file, fullPage: false });
    return file;
}

/** Run one step; record it with a screenshot either way. A failed step ends the run. */
async function step(page, name, fn) {
    const started = Date.now();
    try {
        const detail = await fn();
        const file = await screenshot(page, name);
        report.steps.push({ name, ok: true, ms: Date.now() - started, screenshot: file, detail });
        console.log(`ok   ${name}`);
        return true;
    } catch (err) {
        const file = await screenshot(page, `${name}-FAILED`).catch(() => null);
        // What the user saw (e.g. "Heating up" / "Connection Lost!"), beside the error.
        const shown = await page.locator("body").innerText({ timeout: 2000 })
            .then((text) => text.replace(/\s+/g, " ").slice(0, 300)).catch(() => null);
        report.steps.push({ name, ok: false, ms: Date.now() - started, screenshot: file, error: String(err.message ?? err), shown });
        console.log(`FAIL ${name}: ${err.message ?? err}`);
        return false;
    }
}

function watch(page, label) {
    page.on("console", (msg) => {
        if (msg.type() === "error") report.console_errors.push(`${label}: ${msg.text()}`.slice(0, 500));
    });
    page.on("response", (resp) => {
        const url = resp.url();
        if (resp.status() >= 400 && url.includes("/_matrix/")) {
            // Counted per request line: a client retrying an endpoint forever shows as one line.
            const key = `${resp.request().method()} ${url.replace(/^https?:\/\/[^/]+/, "").replace(/![^/]+/, "{roomId}")} -> ${resp.status()}`;
            report.failed_requests[key] = (report.failed_requests[key] ?? 0) + 1;
        }
    });
}

async function newPage(browser, label) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(STEP_MS);
    const page = await context.newPage();
    watch(page, label);
    return page;
}

async function submitLogin(page, user = args.user) {
    await page.goto(`${args.cinny}/#/login`);
    await page.fill('input[name="usernameInput"]', user);
    await page.fill('input[name="passwordInput"]', args.password);
    await page.click('button[type="submit"]');
}

/** A Matrix call from the page with Cinny's own session (its base URL and token). */
async function pageCall(page, method, path, body) {
    return page.evaluate(async ({ method, path, body }) => {
        const base = localStorage.getItem("cinny_hs_base_url");
        const token = localStorage.getItem("cinny_access_token");
        const resp = await fetch(`${base}/_matrix/client/v3${path}`, {
            method,
            headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
            body: body === undefined ? undefined : JSON.stringify(body),
        });
        const answer = await resp.json();
        if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${JSON.stringify(answer)}`);
        return answer;
    }, { method, path, body });
}

/** Wait until the client shows its home: the sync loop has started. */
async function homeShown(page) {
    await page.getByText("Create Room", { exact: true }).first().waitFor();
}

async function createRoom(page, name, encrypted) {
    await page.getByText("Create Room", { exact: true }).first().click();
    await page.fill('input[name="name"]', name);
    const toggle = page.locator(".create-room .toggle").first();
    if ((await toggle.count()) > 0) {
        const active = (await toggle.getAttribute("class") ?? "").includes("toggle--active");
        if (active !== encrypted) await toggle.click();
    }
    await page.locator('.create-room button[type="submit"]').click();
    // The new room opens with its composer.
    await page.locator('[data-slate-editor="true"]').first().waitFor();
    return { encrypted };
}

/**
 * What Roost itself holds for the room named `roomName`, read with Cinny's own access
 * token from the page: the room id, whether it has m.room.encryption, and the type of
 * its newest events (m.room.encrypted when Cinny encrypted the message).
 */
async function serverView(page, roomName) {
    return page.evaluate(async (name) => {
        const base = localStorage.getItem("cinny_hs_base_url");
        const token = localStorage.getItem("cinny_access_token");
        const get = async (path) => {
            const resp = await fetch(`${base}/_matrix/client/v3${path}`, { headers: { Authorization: `Bearer ${token}` } });
            return { status: resp.status, body: await resp.json() };
        };
        const { body: joined } = await get("/joined_rooms");
        for (const roomId of joined.joined_rooms ?? []) {
            const room = encodeURIComponent(roomId);
            const { body: nameEvent } = await get(`/rooms/${room}/state/m.room.name`);
            if (nameEvent.name !== name) continue;
            const encryption = await get(`/rooms/${room}/state/m.room.encryption`);
            const { body: page } = await get(`/rooms/${room}/messages?dir=b&limit=3`);
            return {
                room_id: roomId,
                encryption: encryption.status === 200 ? encryption.body : null,
                newest_types: (page.chunk ?? []).map((e) => e.type),
            };
        }
        return null;
    }, roomName);
}

async function sendMessage(page, roomName, text, encrypted) {
    const editor = page.locator('[data-slate-editor="true"]').first();
    await editor.click();
    await page.keyboard.type(text);
    await page.keyboard.press("Enter");
    // Sent, echoed by the server's sync, and shown in the timeline (not the composer).
    await page.locator(`[data-message-id] :text-is("${text}")`).first().waitFor();
    // Cinny shows its local echo at once; the message is sent when Roost holds it (an
    // encrypted one after the keys are claimed and shared), so ask Roost until it does.
    const expected = encrypted ? "m.room.encrypted" : "m.room.message";
    const deadline = Date.now() + STEP_MS;
    let server = await serverView(page, roomName);
    while (server?.newest_types[0] !== expected && Date.now() < deadline) {
        await page.waitForTimeout(500);
        server = await serverView(page, roomName);
    }
    if (!server) throw new Error(`Roost has no joined room named ${roomName}`);
    if (server.newest_types[0] !== expected) {
        throw new Error(`Roost's newest event in ${roomName} is ${server.newest_types[0]}, not ${expected}`);
    }
    if (encrypted !== (server.encryption !== null)) {
        throw new Error(`${roomName}: m.room.encryption is ${JSON.stringify(server.encryption)}`);
    }
    return { text, server };
}

const browser = await chromium.launch({ executablePath: args.chromium, headless: true, args: CHROMIUM_FLAGS });
try {
    const first = await newPage(browser, "register");
    const retry = first.getByRole("button", { name: "Retry" });
    let ok = await step(first, "register", async () => {
        await first.goto(`${args.cinny}/#/register`);
        await first.fill('input[name="usernameInput"]', args.user);
        await first.fill('input[name="passwordInput"]', args.password);
        await first.fill('input[name="confirmPasswordInput"]', args.password);
        await first.click('button[type="submit"]');
        // Either the client starts, or Cinny shows a UI-auth stage's error with Retry.
        await Promise.race([homeShown(first), retry.waitFor()]);
        if (await retry.isVisible()) {
            const shown = (await first.locator("body").innerText()).split("\n").filter((l) => /M_[A-Z_]+|required|denied|failed/i.test(l));
            throw new Error(`Cinny showed a registration error instead of its home: ${shown.join(" / ")}`);
        }
    });
    if (!ok && await retry.isVisible()) {
        // What a user would do next: press Retry, which sends the stage again.
        ok = await step(first, "register-after-retry", async () => {
            await retry.click();
            await homeShown(first);
        });
    }
    await first.context().close();

    const page = await newPage(browser, "login");
    ok = ok && await step(page, "login", async () => {
        await submitLogin(page);
        await homeShown(page);
    });
    ok = ok && await step(page, "create-room", () => createRoom(page, "Roost check", false));
    ok = ok && await step(page, "send-message", () => sendMessage(page, "Roost check", "Hello from Cinny on Roost", false));
    if (ok) {
        const enc = await step(page, "create-encrypted-room", () => createRoom(page, "Roost secret", true));
        if (enc) await step(page, "send-encrypted-message", () => sendMessage(page, "Roost secret", "A secret on Roost", true));
        // A second user in their own Cinny joins the encrypted room; what is sent after the
        // join must reach their browser as a message it can decrypt (keys go device to
        // device through Roost).
        const bob = await newPage(browser, "second-user");
        const bobName = `${args.user}b`;
        let both = await step(bob, "second-user-encrypted-register-login", async () => {
            await bob.goto(`${args.cinny}/#/register`);
            await bob.fill('input[name="usernameInput"]', bobName);
            await bob.fill('input[name="passwordInput"]', args.password);
            await bob.fill('input[name="confirmPasswordInput"]', args.password);
            await bob.click('button[type="submit"]');
            const again = bob.getByRole("button", { name: "Retry" });
            await Promise.race([homeShown(bob), again.waitFor()]);
            if (await again.isVisible()) await again.click();  // the registration error above
            await homeShown(bob);
        });
        both = both && await step(bob, "second-user-encrypted-join", async () => {
            const view = await serverView(page, "Roost secret");
            const bobId = (await pageCall(bob, "GET", "/account/whoami")).user_id;
            await pageCall(page, "POST", `/rooms/${encodeURIComponent(view.room_id)}/invite`, { user_id: bobId });
            await pageCall(bob, "POST", `/join/${encodeURIComponent(view.room_id)}`, {});
            await bob.getByText("Roost secret", { exact: true }).first().click();
            await bob.locator('[data-slate-editor="true"]').first().waitFor();
            return { room_id: view.room_id, bob: bobId };
        });
        both = both && await step(page, "send-encrypted-message-to-second-user", async () => {
            // Cinny learns of Bob's join through its sync; then it shares the room key with his device.
            await page.getByText(`${bobName} joined the room`).first().waitFor();
            return sendMessage(page, "Roost secret", "For Bob's eyes", true);
        });
        if (both) {
            await step(bob, "second-user-encrypted-decrypts", async () => {
                await bob.locator(`[data-message-id] :text-is("For Bob's eyes")`).first().waitFor();
            });
        }
    }
} finally {
    await browser.close();
    writeFileSync(join(args.out, "report.json"), JSON.stringify(report, null, 2));
}
const failed = report.steps.filter((s) => !s.ok).map((s) => s.name);
console.log(failed.length ? `failed: ${failed.join(", ")}` : "all steps passed");
process.exit(report.steps.find((s) => !s.ok && !s.name.includes("encrypted")) ? 1 : 0);
