"""matrix-js-sdk with its Rust crypto (@matrix-org/matrix-sdk-crypto-wasm) against Roost:
two users in an encrypted room each decrypt the other's messages; a second device of one
user appears in the other's device list and decrypts what is sent after it joined; a key
backup made by one device is restored by another."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.clients.js_harness import run_js
from tests.federation.synapse_harness import start_synapse
from tests.federation.two_servers import start_node
from tests.server_harness import start_server


class JsEncryptedChatTests(TestCase):
    timeout = 300

    async def test_two_users_decrypt_each_others_messages(self) -> None:
        server = await start_server(self)
        run = await run_js(self, "e2ee_chat.mjs", {"base_url": server.base_url,
                                                   "steps": ["chat"]})
        chat = run.step("chat")
        self.assertIn({"body": "hello bob, secretly", "failure": False, "encrypted": True,
                       "sender": "@alice:test.roost"}, chat["bob_sees"])
        self.assertIn({"body": "hello alice, secretly", "failure": False, "encrypted": True,
                       "sender": "@bob:test.roost"}, chat["alice_sees"])

    async def test_a_second_device_is_seen_and_decrypts_later_messages(self) -> None:
        server = await start_server(self)
        run = await run_js(self, "e2ee_chat.mjs", {"base_url": server.base_url,
                                                   "steps": ["chat", "second"]})
        second = run.step("second")
        self.assertEqual(second["devices_after"], second["devices_before"] + 1)
        self.assertIn("for both of alice's devices",
                      [b["body"] for b in second["second_sees"] if not b["failure"]])

    async def test_cross_signing_is_bootstrapped_and_seen_by_the_other_user(self) -> None:
        server = await start_server(self)
        run = await run_js(self, "e2ee_chat.mjs", {"base_url": server.base_url,
                                                   "steps": ["chat", "cross_signing"]})
        cross = run.step("cross_signing")
        self.assertTrue(cross["ready"], cross)
        self.assertTrue(cross["status"]["publicKeysOnDevice"], cross)
        self.assertIsNotNone(cross["bob_sees"], cross)
        self.assertEqual(len(cross["bob_sees"]["master"]), 1)
        self.assertEqual(len(cross["bob_sees"]["device_signatures"]), 2)  # self + cross
        self.assertFalse(cross["bob_sees"]["user_signing_visible"])

    async def test_a_key_backup_is_restored_by_another_device(self) -> None:
        server = await start_server(self)
        run = await run_js(self, "e2ee_chat.mjs", {"base_url": server.base_url,
                                                   "steps": ["chat", "backup"]})
        backup = run.step("backup")
        self.assertGreaterEqual(backup["restored"], 1)  # keys imported from Roost's backup
        self.assertIn("hello bob, secretly",
                      [b["body"] for b in backup["third_sees"] if not b["failure"]])


class JsEncryptedChatWithSynapseTests(TestCase):
    timeout = 300

    async def test_a_roost_user_and_a_synapse_user_decrypt_each_others_messages(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        assert roost.server is not None
        run = await run_js(self, "e2ee_chat.mjs", {
            "base_url": roost.server.base_url, "bob_base_url": synapse.client_url,
            "steps": ["chat"]})
        chat = run.step("chat")
        alice, bob = f"@alice:{roost.name}", f"@bob:{synapse.name}"
        self.assertIn({"body": "hello bob, secretly", "failure": False, "encrypted": True,
                       "sender": alice}, chat["bob_sees"])
        self.assertIn({"body": "hello alice, secretly", "failure": False, "encrypted": True,
                       "sender": bob}, chat["alice_sees"])

    async def test_new_devices_on_either_server_are_seen_across_and_decrypt(self) -> None:
        synapse = await start_synapse(self)
        roost = await start_node(self)
        assert roost.server is not None
        run = await run_js(self, "e2ee_chat.mjs", {
            "base_url": roost.server.base_url, "bob_base_url": synapse.client_url,
            "steps": ["chat", "second", "bob_second"]})
        for name, text in (("second", "for both of alice's devices"),
                           ("bob_second", "for both of bob's devices")):
            seen = run.step(name)
            self.assertEqual(seen["devices_after"], seen["devices_before"] + 1, name)
            self.assertIn(text, [b["body"] for b in seen["second_sees"] if not b["failure"]])
