"""Autobahn's native WebSocket helpers (NVX) without parsing C at import.

Autobahn validates incoming text frames' UTF-8 and unmasks client frames with two
compiled CFFI modules, `_nvx_utf8validator` and `_nvx_xormasker`, reached through two
private wrapper modules, `autobahn.nvx._utf8validator` and `autobahn.nvx._xormasker`.
Those wrappers also hold the modules' build recipe: at import each makes an `FFI()` and
`cdef`s the C declarations, which loads cffi's C parser and pycparser and parses them
(about 1.1 MiB resident in the server, for declarations the compiled modules already
carry; docs/benchmarks.md). Nothing at run time uses those FFI objects but `ffi.gc`,
which the compiled modules' own `ffi` does as well.

`install()` puts wrappers with the same classes and functions, built on the compiled
modules' `ffi` and `lib`, in their place before Autobahn imports them: the same native
code runs on every frame, only the import is lighter. It does nothing where Autobahn
would not use NVX (the compiled modules missing, or `AUTOBAHN_USE_NVX=0`) or once
Autobahn's own wrappers are loaded. Written against autobahn 26.10 (pinned in
pyproject.toml); tests/homeserver/test_nvx.py checks these wrappers answer as
Autobahn's do and that the server process loads no pycparser.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

UTF8_MODULE = "autobahn.nvx._utf8validator"
XOR_MODULE = "autobahn.nvx._xormasker"
# Payloads shorter than this are unmasked by the scalar code, longer ones by SSE2 (as
# Autobahn's create_xor_masker chooses).
SIMD_FROM = 128


def install() -> bool:
    """Register the light wrappers as Autobahn's; call it before anything imports
    autobahn.websocket. Returns whether they were installed."""
    if os.environ.get("AUTOBAHN_USE_NVX", "").lower() in ("0", "false"):
        return False
    if UTF8_MODULE in sys.modules or XOR_MODULE in sys.modules:
        return False
    try:
        import _nvx_utf8validator
        import _nvx_xormasker
    except ImportError:
        return False
    sys.modules[UTF8_MODULE] = _utf8_module(_nvx_utf8validator.ffi, _nvx_utf8validator.lib)
    sys.modules[XOR_MODULE] = _xor_module(_nvx_xormasker.ffi, _nvx_xormasker.lib)
    return True


def _utf8_module(ffi: Any, lib: Any) -> types.ModuleType:
    class Utf8Validator:
        """Incremental UTF-8 validation, as autobahn.nvx._utf8validator.Utf8Validator."""

        __slots__ = ("_vld",)

        def __init__(self) -> None:
            self._vld = ffi.gc(lib.nvx_utf8vld_new(), lib.nvx_utf8vld_free)

        def reset(self) -> None:
            lib.nvx_utf8vld_reset(self._vld)

        def validate(self, ba: bytes) -> tuple[bool, bool, int, int]:
            """(still valid, ends on a code point boundary, index in this chunk, total)."""
            res = lib.nvx_utf8vld_validate(self._vld, ba, len(ba))
            return (res >= 0, res == 0, lib.nvx_utf8vld_get_current_index(self._vld),
                    lib.nvx_utf8vld_get_total_index(self._vld))

    module = types.ModuleType(UTF8_MODULE, "Roost's light NVX UTF-8 wrapper (roost.homeserver.nvx).")
    module.Utf8Validator = Utf8Validator  # type: ignore[attr-defined]
    module.ffi = ffi  # type: ignore[attr-defined]
    return module


def _xor_module(ffi: Any, lib: Any) -> types.ModuleType:
    class XorMaskerNvx:
        """A frame's XOR (un)masker, as autobahn.nvx._xormasker.XorMaskerNvx."""

        __slots__ = ("_masker", "_mask_buffer")

        def __init__(self, mask: bytes, use_simd: bool = True) -> None:
            assert len(mask) == 4, "Mask must be exactly 4 bytes"
            self._mask_buffer = ffi.new("uint8_t[4]", mask)  # alive as long as the masker
            self._masker = ffi.gc(lib.nvx_xormask_new(self._mask_buffer), lib.nvx_xormask_free)
            lib.nvx_xormask_set_impl(self._masker, 2 if use_simd else 1)  # SSE2 / scalar

        def pointer(self) -> int:
            return lib.nvx_xormask_pointer(self._masker)  # type: ignore[no-any-return]

        def reset(self) -> None:
            lib.nvx_xormask_reset(self._masker)

        def process(self, data: bytes) -> bytes:
            length = len(data)
            buffer = ffi.new("uint8_t[]", length)
            ffi.memmove(buffer, data, length)
            lib.nvx_xormask_process(self._masker, buffer, length)
            return bytes(ffi.buffer(buffer, length))

    class XorMaskerSimple(XorMaskerNvx):
        __slots__ = ()

        def __init__(self, mask: bytes) -> None:
            super().__init__(mask, use_simd=False)

    class XorMaskerShifted1(XorMaskerNvx):
        __slots__ = ()

        def __init__(self, mask: bytes) -> None:
            super().__init__(mask, use_simd=True)

    def create_xor_masker(mask: bytes, length: int | None = None) -> XorMaskerNvx:
        if length is None or length < SIMD_FROM:
            return XorMaskerSimple(mask)
        return XorMaskerShifted1(mask)

    module = types.ModuleType(XOR_MODULE, "Roost's light NVX XOR wrapper (roost.homeserver.nvx).")
    for value in (XorMaskerNvx, XorMaskerSimple, XorMaskerShifted1, create_xor_masker):
        setattr(module, value.__name__, value)
    module.ffi = ffi  # type: ignore[attr-defined]
    return module
