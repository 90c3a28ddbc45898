// Drive a Cinny build in headless Debian Chromium against Roost, as a new user would:
// register, log in again in a fresh browser profile, create a room, send a message and
// see it in the timeline; then the same in an encrypted room. Screenshots and a JSON
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

const report = { user: args.user, steps: [], console_errors: [], failed_requests: [] };
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
        report.steps.push({ name, ok: false, ms: Date.now() - started, screenshot: file, error: String(err.message ?? err) });
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
            report.failed_requests.push(`${label}: ${resp.request().method()} ${url.replace(/^https?:\/\/[^/]+/, "")} -> ${resp.status()}`);
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

async function submitLogin(page) {
    await page.goto(`${args.cinny}/#/login`);
    await page.fill('input[name="usernameInput"]', args.user);
    await page.fill('input[name="passwordInput"]', args.password);
    await page.click('button[type="submit"]');
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

async function sendMessage(page, text) {
    const editor = page.locator('[data-slate-editor="true"]').first();
    await editor.click();
    await page.keyboard.type(text);
    await page.keyboard.press("Enter");
    // Sent, echoed by the server's sync, and shown in the timeline (not the composer).
    await page.locator(`[data-message-id] :text-is("${text}")`).first().waitFor();
    return { text };
}

const browser = await chromium.launch({ executablePath: args.chromium, headless: true, args: CHROMIUM_FLAGS });
try {
    const first = await newPage(browser, "register");
    let ok = await step(first, "register", async () => {
        await first.goto(`${args.cinny}/#/register`);
        await first.fill('input[name="usernameInput"]', args.user);
        await first.fill('input[name="passwordInput"]', args.password);
        await first.fill('input[name="confirmPasswordInput"]', args.password);
        await first.click('button[type="submit"]');
        await homeShown(first);
    });
    await first.context().close();

    const page = await newPage(browser, "login");
    ok = ok && await step(page, "login", async () => {
        await submitLogin(page);
        await homeShown(page);
    });
    ok = ok && await step(page, "create-room", () => createRoom(page, "Roost check", false));
    ok = ok && await step(page, "send-message", () => sendMessage(page, "Hello from Cinny on Roost"));
    if (ok) {
        const enc = await step(page, "create-encrypted-room", () => createRoom(page, "Roost secret", true));
        if (enc) await step(page, "send-encrypted-message", () => sendMessage(page, "A secret on Roost"));
    }
} finally {
    await browser.close();
    writeFileSync(join(args.out, "report.json"), JSON.stringify(report, null, 2));
}
const failed = report.steps.filter((s) => !s.ok).map((s) => s.name);
console.log(failed.length ? `failed: ${failed.join(", ")}` : "all steps passed");
process.exit(report.steps.find((s) => !s.ok && !s.name.includes("encrypted")) ? 1 : 0);
