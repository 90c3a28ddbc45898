// End-to-end encryption with matrix-js-sdk and its Rust crypto
// (tests/clients/test_js_e2ee.py). Each step is recorded on its own.
//
// Parameters: base_url (Alice's server), bob_base_url (Bob's; defaults to base_url),
// bob_user (Bob's localpart), steps (which of the optional steps to run).
//
// chat       Alice creates an encrypted room and invites Bob, who joins; each sends a
//            message and the other's client decrypts it (Olm sessions over
//            /keys/claim and /sendToDevice, Megolm keys as to-device messages)
// second     a second device of Alice logs in; Bob's client sees Alice's device list
//            change (device_lists.changed), and a message Bob sends afterwards is
//            decrypted by the new device
// cross_signing Alice's client bootstraps cross-signing (keys uploaded, her device signed
//            by her self-signing key); Bob reads her master key and the signature
// backup     Alice's first device makes a key backup (secret storage-free: a backup
//            key kept by the test); a third device of Alice restores it from the
//            server and decrypts the room's history with it
import { makeClient, runScenario, startClient, step, until } from "./lib/harness.mjs";

const ENCRYPTION = {
    type: "m.room.encryption",
    state_key: "",
    content: { algorithm: "m.megolm.v1.aes-sha2" },
};

function bodies(client, roomId) {
    const room = client.getRoom(roomId);
    if (!room) return [];
    return room.getLiveTimeline().getEvents()
        .filter((e) => e.getType() === "m.room.message" || e.getWireType() === "m.room.encrypted")
        .map((e) => ({ body: e.getContent()?.body ?? null, failure: e.isDecryptionFailure(),
            encrypted: e.isEncrypted(), sender: e.getSender() }));
}

// The Rust crypto learns a room is encrypted from its m.room.encryption event, while the
// sync that brought it is processed; sending before then is refused by the SDK.
async function encryptionConfigured(client, roomId) {
    for (let i = 0; i < 600; i++) {
        if (await client.getCrypto().isEncryptionEnabledInRoom(roomId)) return;
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`the room ${roomId} never became encrypted in ${client.getUserId()}'s client`);
}

function hasBody(client, roomId, text) {
    return bodies(client, roomId).some((b) => b.body === text && b.encrypted);
}

async function start(client) {
    return startClient(client);
}

await runScenario(async (params, result, cleanup) => {
    const base = params.base_url;
    const bobBase = params.bob_base_url ?? base;
    const wanted = new Set(params.steps ?? ["chat"]);
    const alice = cleanup(await makeClient(base, "alice", { crypto: true }));
    const bob = cleanup(await makeClient(bobBase, params.bob_user ?? "bob", { crypto: true }));
    const bobId = bob.getUserId();
    const aliceId = alice.getUserId();
    await start(alice);
    await start(bob);

    const roomId = await step(result, "chat", async () => {
        const { room_id: id } = await alice.createRoom({
            name: "secret", invite: [bobId], initial_state: [ENCRYPTION],
        });
        await until(bob, () => bob.getRoom(id)?.getMyMembership() === "invite", "Bob's invite");
        await bob.joinRoom(id);
        await until(alice, () => alice.getRoom(id)?.getMember(bobId)?.membership === "join",
            "Bob's join in Alice's sync");
        await encryptionConfigured(alice, id);
        await alice.sendTextMessage(id, "hello bob, secretly");
        await until(bob, () => hasBody(bob, id, "hello bob, secretly"),
            "Bob decrypting Alice's message", () => bodies(bob, id));
        await encryptionConfigured(bob, id);
        await bob.sendTextMessage(id, "hello alice, secretly");
        await until(alice, () => hasBody(alice, id, "hello alice, secretly"),
            "Alice decrypting Bob's message", () => bodies(alice, id));
        return { room_id: id, bob_sees: bodies(bob, id), alice_sees: bodies(alice, id) };
    });
    if (!roomId) return;
    const rid = roomId.room_id;

    if (wanted.has("second")) {
        await step(result, "second", async () => {
            const before = (await bob.getCrypto().getUserDeviceInfo([aliceId])).get(aliceId)?.size ?? 0;
            const second = cleanup(await makeClient(base, "alice", {
                crypto: true, register: false, password: "pw-alice-roost", deviceName: "second",
            }));
            await start(second);
            // Bob's client learns of the new device through device_lists.changed.
            let after = before;
            await until(bob, () => {
                bob.getCrypto().getUserDeviceInfo([aliceId]).then((m) => {
                    after = m.get(aliceId)?.size ?? 0;
                });
                return after > before;
            }, "Bob seeing Alice's second device", () => ({ before, after }));
            await bob.sendTextMessage(rid, "for both of alice's devices");
            await until(second, () => hasBody(second, rid, "for both of alice's devices"),
                "the second device decrypting", () => bodies(second, rid));
            return { devices_before: before, devices_after: after, second_sees: bodies(second, rid) };
        });
    }

    if (wanted.has("bob_second")) {
        // The mirror of "second": a second device of Bob (on bob_base_url) appears in
        // Alice's device list and decrypts what Alice sends afterwards.
        await step(result, "bob_second", async () => {
            const before = (await alice.getCrypto().getUserDeviceInfo([bobId])).get(bobId)?.size ?? 0;
            const second = cleanup(await makeClient(bobBase, params.bob_user ?? "bob", {
                crypto: true, register: false, password: `pw-${params.bob_user ?? "bob"}-roost`,
                deviceName: "bob second",
            }));
            await start(second);
            let after = before;
            await until(alice, () => {
                alice.getCrypto().getUserDeviceInfo([bobId]).then((m) => {
                    after = m.get(bobId)?.size ?? 0;
                });
                return after > before;
            }, "Alice seeing Bob's second device", () => ({ before, after }));
            await alice.sendTextMessage(rid, "for both of bob's devices");
            await until(second, () => hasBody(second, rid, "for both of bob's devices"),
                "Bob's second device decrypting", () => bodies(second, rid));
            return { devices_before: before, devices_after: after, second_sees: bodies(second, rid) };
        });
    }

    if (wanted.has("cross_signing")) {
        await step(result, "cross_signing", async () => {
            const crypto = alice.getCrypto();
            let asked = 0;
            await crypto.bootstrapCrossSigning({
                setupNewCrossSigning: true,
                authUploadDeviceSigningKeys: async (makeRequest) => {
                    asked += 1;
                    await makeRequest({
                        type: "m.login.password", password: "pw-alice-roost",
                        identifier: { type: "m.id.user", user: "alice" },
                    });
                },
            });
            const status = await crypto.getCrossSigningStatus();
            const ready = await crypto.isCrossSigningReady();
            // Bob's client reads Alice's master key from Roost and sees her device signed.
            await bob.getCrypto().getUserDeviceInfo([aliceId], true);
            let bobSees = null;
            for (let i = 0; i < 100 && !bobSees; i++) {
                const query = await bob.http.authedRequest("POST", "/keys/query", undefined,
                    { device_keys: { [aliceId]: [] } });
                const device = query.device_keys?.[aliceId]?.[alice.getDeviceId()];
                const master = query.master_keys?.[aliceId];
                if (master && Object.keys(device?.signatures?.[aliceId] ?? {}).length > 1) {
                    bobSees = { master: Object.keys(master.keys),
                        device_signatures: Object.keys(device.signatures[aliceId]),
                        user_signing_visible: !!query.user_signing_keys?.[aliceId] };
                }
                if (!bobSees) await new Promise((resolve) => setTimeout(resolve, 100));
            }
            return { ready, status, ui_auth_asked: asked, bob_sees: bobSees };
        });
    }

    if (wanted.has("backup")) {
        await step(result, "backup", async () => {
            const crypto = alice.getCrypto();
            await crypto.resetKeyBackup();
            const check = await crypto.checkKeyBackupAndEnable();
            const version = check?.backupInfo?.version;
            if (!version) throw new Error(`no active backup after reset: ${JSON.stringify(check)}`);
            const backupKey = await crypto.getSessionBackupPrivateKey();
            // Wait until the room key is in the backup on the server.
            let count = 0;
            let lastError = null;
            for (let i = 0; i < 600 && count === 0; i++) {
                try {
                    const r = await alice.http.authedRequest("GET", "/room_keys/keys", { version });
                    count = Object.keys(r.rooms ?? {}).length;
                } catch (err) {
                    lastError = String(err);
                }
                if (count === 0) await new Promise((resolve) => setTimeout(resolve, 100));
            }
            if (count === 0) throw new Error(`the room key never reached the backup: ${lastError}`);
            const third = cleanup(await makeClient(base, "alice", {
                crypto: true, register: false, password: "pw-alice-roost", deviceName: "third",
            }));
            await start(third);
            const thirdCrypto = third.getCrypto();
            await thirdCrypto.storeSessionBackupPrivateKey(backupKey, version);
            const restored = await thirdCrypto.restoreKeyBackup();
            // History sent before this device existed now decrypts.
            const room = third.getRoom(rid);
            for (const event of room.getLiveTimeline().getEvents()) {
                if (event.isEncrypted()) await third.decryptEventIfNeeded(event, { isRetry: true });
            }
            await until(third, () => hasBody(third, rid, "hello bob, secretly"),
                "the third device decrypting history from the backup", () => bodies(third, rid));
            return { version, restored: restored?.imported ?? null, third_sees: bodies(third, rid) };
        });
    }
});
