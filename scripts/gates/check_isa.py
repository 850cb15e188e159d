"""Checks that the shared libraries in a wheel assume no more than the x86-64 baseline (SSE2).

    python scripts/gates/check_isa.py WHEEL

Disassembles every ELF shared library in the wheel (the extension and the libraries bundled by
auditwheel) and fails if a function outside the runtime-dispatched ones uses AVX/AVX2/AVX-512
(VEX/EVEX encodings, ymm/zmm/mask registers), SSE3/SSSE3/SSE4, or BMI/POPCNT/LZCNT/MOVBE-class
instructions. Runtime-dispatched functions (libopus' *_sse4_1/*_avx2 kernels behind its CPU
detection, GCC target_clones variants) are allowed by name and listed. A -march=native or
-march=x86-64-v2+ build fails this check.

rtvoice's own extension (_core*) is always checked strictly. A bundled third-party library
without a symbol table (a distribution's stripped libopus, as in the local wheel check) cannot be
checked: its static dispatched kernels show up under the preceding exported symbol. It is
reported, not failed; the CI wheels bundle libopus built from source, which keeps its symbols.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

BEYOND_BASELINE = {
    # SSE3
    "addsubps", "addsubpd", "haddps", "haddpd", "hsubps", "hsubpd", "lddqu", "movddup",
    "movshdup", "movsldup", "fisttp", "monitor", "mwait",
    # SSSE3
    "pabsb", "pabsw", "pabsd", "palignr", "phaddw", "phaddd", "phaddsw", "phsubw", "phsubd",
    "phsubsw", "pmaddubsw", "pmulhrsw", "pshufb", "psignb", "psignw", "psignd",
    # SSE4.1
    "blendpd", "blendps", "blendvpd", "blendvps", "dppd", "dpps", "extractps", "insertps",
    "movntdqa", "mpsadbw", "packusdw", "pblendvb", "pblendw", "pcmpeqq", "pextrb", "pextrd",
    "pextrq", "phminposuw", "pinsrb", "pinsrd", "pinsrq", "pmaxsb", "pmaxsd", "pmaxud",
    "pmaxuw", "pminsb", "pminsd", "pminud", "pminuw", "pmovsxbw", "pmovsxbd", "pmovsxbq",
    "pmovsxwd", "pmovsxwq", "pmovsxdq", "pmovzxbw", "pmovzxbd", "pmovzxbq", "pmovzxwd",
    "pmovzxwq", "pmovzxdq", "pmuldq", "pmulld", "ptest", "roundpd", "roundps", "roundsd",
    "roundss",
    # SSE4.2
    "pcmpestri", "pcmpestrm", "pcmpistri", "pcmpistrm", "pcmpgtq", "crc32",
    # POPCNT, LZCNT, BMI1/2, MOVBE, ADX
    # (tzcnt is absent on purpose: GCC emits `rep bsf` for baseline code, which disassembles as
    # tzcnt and runs as bsf on CPUs without BMI1.)
    "popcnt", "lzcnt", "andn", "bextr", "blsi", "blsmsk", "blsr", "bzhi", "mulx",
    "pdep", "pext", "rorx", "sarx", "shlx", "shrx", "movbe", "adcx", "adox",
}  # fmt: skip
WIDE_REGISTER = re.compile(r"\b(ymm|zmm)\d+\b|\{k[1-7]\}")
# Functions that run only after a CPU check: libopus RTCD kernels and GCC target_clones variants.
DISPATCHED = re.compile(r"(?i)(sse4|ssse3|sse3|avx|fma|x86_64_v[234]|\.arch_)")
FUNCTION = re.compile(r"^[0-9a-f]+ <(.+)>:$")
INSTRUCTION = re.compile(r"^\s+[0-9a-f]+:\s+(?:(?:lock|rep|repz|repnz|notrack|bnd)\s+)*(\S+)(.*)$")


def extended(mnemonic: str, operands: str) -> bool:
    if mnemonic in BEYOND_BASELINE:
        return True
    if mnemonic.startswith("v") and mnemonic not in {"verr", "verw"}:
        return True  # every other v-mnemonic is VEX/EVEX-encoded (AVX and later)
    return bool(WIDE_REGISTER.search(operands))


def scan(path: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Returns {function: mnemonics} for undispatched and for dispatched functions."""
    asm = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-M", "intel", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    bad: dict[str, set[str]] = defaultdict(set)
    dispatched: dict[str, set[str]] = defaultdict(set)
    function = "?"
    for line in asm.splitlines():
        if m := FUNCTION.match(line):
            function = m.group(1)
        elif (m := INSTRUCTION.match(line)) and extended(m.group(1), m.group(2)):
            (dispatched if DISPATCHED.search(function) else bad)[function].add(m.group(1))
    return bad, dispatched


def has_symbol_table(path: Path) -> bool:
    headers = subprocess.run(
        ["readelf", "-S", "--wide", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return ".symtab" in headers


def main() -> int:
    wheel = Path(sys.argv[1])
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        libraries = [
            p for p in Path(tmp).rglob("*") if p.is_file() and p.read_bytes()[:4] == b"\x7fELF"
        ]
        if not libraries:
            print(f"check_isa: no ELF libraries in {wheel.name}", file=sys.stderr)
            return 1
        for lib in sorted(libraries):
            bad, dispatched = scan(lib)
            name = lib.relative_to(tmp)
            own = lib.name.startswith("_core")
            if bad and not own and not has_symbol_table(lib):
                print(
                    f"check_isa: {name}: stripped third-party library, {len(bad)} exported "
                    "functions contain code beyond the baseline (cannot tell dispatched kernels "
                    "apart without symbols; not failed)"
                )
                continue
            print(
                f"check_isa: {name}: {len(bad)} undispatched functions beyond x86-64 baseline, "
                f"{len(dispatched)} runtime-dispatched"
            )
            for function, mnemonics in sorted(dispatched.items()):
                print(f"    dispatched {function}: {' '.join(sorted(mnemonics)[:6])}")
            for function, mnemonics in sorted(bad.items()):
                print(f"    NOT BASELINE {function}: {' '.join(sorted(mnemonics))}")
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
