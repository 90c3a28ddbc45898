"""The server ACL evaluator (roost/rooms/server_acl.py), against the spec's rules."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.rooms.server_acl import ServerAcl, host_of


class ServerAclTests(TestCase):
    def test_allow_and_deny_globs_without_port_ignoring_case(self) -> None:
        acl = ServerAcl({"allow": ["*.example.org", "good.net"], "deny": ["bad.example.org"]})
        self.assertTrue(acl.allows("chat.example.org:8448"))
        self.assertTrue(acl.allows("GOOD.net"))
        self.assertFalse(acl.allows("bad.example.org"))
        self.assertFalse(acl.allows("example.org"))  # "*." needs a label before it
        self.assertFalse(acl.allows("other.net"))

    def test_question_mark_is_one_character(self) -> None:
        acl = ServerAcl({"allow": ["s?.org"]})
        self.assertTrue(acl.allows("s1.org"))
        self.assertFalse(acl.allows("s12.org"))

    def test_deny_wins_over_allow(self) -> None:
        self.assertFalse(ServerAcl({"allow": ["*"], "deny": ["evil.org"]}).allows("evil.org"))

    def test_empty_or_missing_allow_denies_everyone(self) -> None:
        self.assertFalse(ServerAcl({}).allows("a.org"))
        self.assertFalse(ServerAcl({"allow": "*"}).allows("a.org"))  # not a list: ignored

    def test_ip_literals(self) -> None:
        no_ip = ServerAcl({"allow": ["*"], "allow_ip_literals": False})
        for name in ("1.2.3.4", "1.2.3.4:8448", "[::1]", "[2001:db8::1]:443"):
            self.assertFalse(no_ip.allows(name), name)
        self.assertTrue(no_ip.allows("a.org"))
        self.assertTrue(ServerAcl({"allow": ["*"]}).allows("1.2.3.4"))
        # a non-boolean allow_ip_literals keeps its default (true)
        self.assertTrue(ServerAcl({"allow": ["*"], "allow_ip_literals": "no"}).allows("1.2.3.4"))

    def test_host_of(self) -> None:
        self.assertEqual([host_of(n) for n in ("a.org", "a.org:80", "[::1]:8448", "[::1]")],
                         ["a.org", "a.org", "[::1]", "[::1]"])
