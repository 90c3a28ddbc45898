"""roost.homeserver.nvx: Autobahn's NVX wrappers without pycparser, answering as Autobahn's."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, TestCase

from roost.homeserver import nvx

try:
    import _nvx_utf8validator
    import _nvx_xormasker
except ImportError:  # Autobahn installed without its compiled helpers
    _nvx_utf8validator = _nvx_xormasker = None

# UTF-8 cases: valid, invalid, and sequences cut between chunks.
UTF8_CHUNKS = [
    [b"hello"],
    ["héllo wörld ✓ 🎉".encode()],
    [b"\xff"],
    [b"abc\xc3"],  # ends inside a sequence
    [b"abc\xc3", b"\xa9def"],  # completed by the next chunk
    [b"\xe2\x82", b"\xac", b"!"],
    [b"\xed\xa0\x80"],  # a surrogate: invalid
    [b"\xf4\x90\x80\x80"],  # past U+10FFFF: invalid
    [b"ok", b"\xc0\xaf"],  # overlong
    [b"x" * 300, "é".encode() * 200],
]


class NvxTests(TestCase):
    def setUp(self) -> None:
        if _nvx_utf8validator is None or _nvx_xormasker is None:
            raise SkipTest("autobahn's compiled NVX modules are not installed")

    def test_the_server_process_loads_no_c_parser(self) -> None:
        """As `roost run` imports it: after install(), Autobahn's WebSocket protocol
        imports with the light wrappers, uses NVX, and pycparser stays unloaded."""
        code = ("import sys; from roost.homeserver import nvx; assert nvx.install(); "
                "import autobahn.twisted.websocket, autobahn.websocket as ws; "
                "from autobahn.websocket.utf8validator import Utf8Validator; "
                "print(ws.USES_NVX, 'pycparser' in sys.modules, 'cffi.cparser' in sys.modules, "
                "Utf8Validator is sys.modules[nvx.UTF8_MODULE].Utf8Validator, "
                "type(sys.modules[nvx.XOR_MODULE].create_xor_masker(b'abcd')).__qualname__)")
        env = {k: v for k, v in os.environ.items() if k != "AUTOBAHN_USE_NVX"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env=env).stdout.split()
        self.assertEqual(out, ["True", "False", "False", "True",
                               "_xor_module.<locals>.XorMaskerSimple"])

    def test_not_installed_when_nvx_is_turned_off_or_autobahns_are_loaded(self) -> None:
        code = ("import sys; from roost.homeserver import nvx; print(nvx.install(), "
                "nvx.UTF8_MODULE in sys.modules)")
        env = {**os.environ, "AUTOBAHN_USE_NVX": "0"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env=env).stdout.split()
        self.assertEqual(out, ["False", "False"])
        import autobahn.nvx._utf8validator  # noqa: F401 - this process loads Autobahn's own

        self.assertFalse(nvx.install())

    def test_utf8_validation_answers_as_autobahns(self) -> None:
        from autobahn.nvx._utf8validator import Utf8Validator as Theirs

        Ours = nvx._utf8_module(_nvx_utf8validator.ffi, _nvx_utf8validator.lib).Utf8Validator
        for chunks in UTF8_CHUNKS:
            ours, theirs = Ours(), Theirs()
            for _ in range(2):  # again after reset()
                got = [ours.validate(chunk) for chunk in chunks]
                self.assertEqual(got, [theirs.validate(chunk) for chunk in chunks], chunks)
                ours.reset()
                theirs.reset()

    def test_unmasking_answers_as_autobahns(self) -> None:
        from autobahn.nvx._xormasker import create_xor_masker as theirs

        ours = nvx._xor_module(_nvx_xormasker.ffi, _nvx_xormasker.lib).create_xor_masker
        payload = bytes(range(256)) * 5
        for length in (None, 0, 5, 127, 128, 1000):
            for pieces in ([payload[:length or 10]],
                           [payload[:3], payload[3:130], payload[130:1001]]):
                mine, autobahns = ours(b"\x01\x80\x7f\xfe", length), theirs(b"\x01\x80\x7f\xfe", length)
                self.assertEqual(type(mine).__name__, type(autobahns).__name__)
                out = [mine.process(p) for p in pieces]
                self.assertEqual(out, [autobahns.process(p) for p in pieces])
                self.assertEqual(mine.pointer(), autobahns.pointer())
                self.assertNotEqual(out[-1], pieces[-1])  # it did mask
                mine.reset()
                autobahns.reset()
                self.assertEqual(mine.process(pieces[0]), autobahns.process(pieces[0]))
