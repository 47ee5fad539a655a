"""The local provider's seccomp filter (providers/local/seccomp.py) is compiled by libseccomp
as a binary tree (fast to load, fast to check); the tree must decide every system call
exactly as the plain list does, and both as Docker's default profile says.

The programs are run here by a small classic-BPF interpreter over ``struct seccomp_data``
(hand-written: no Python library emulates seccomp's BPF; it refuses any instruction it does
not know, so a test cannot pass by skipping one). No root needed, no filter is loaded.
"""

from __future__ import annotations

import errno
import operator
import platform
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.local import seccomp as seccomp_module

sc = pytest.importorskip("pyseccomp", reason="no libseccomp binding")

pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="system call numbers below are x86-64's"
)

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_BIT = 0x40000000
ALLOW = 0x7FFF0000
ERRNO = 0x00050000
KILL_THREAD = 0x00000000
KILL_PROCESS = 0x80000000
# x86-64 system call numbers
READ, SOCKET, CLONE, MOUNT, PERSONALITY, UNSHARE, CLONE3 = 0, 41, 56, 165, 135, 272, 435
CLONE_NEWUSER = 0x10000000
U32 = 0xFFFFFFFF
#: classic BPF's ALU operations by opcode (BPF_ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, MOD, XOR)
ALU = {0x00: operator.add, 0x10: operator.sub, 0x20: operator.mul, 0x30: operator.floordiv,
       0x40: operator.or_, 0x50: operator.and_, 0x60: operator.lshift, 0x70: operator.rshift,
       0x90: operator.mod, 0xA0: operator.xor}  # fmt: skip


def run_bpf(program: bytes, nr: int, arch: int, args: tuple[int, ...] = (0,) * 6) -> int:
    """The return value of a classic-BPF seccomp program for one system call."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:  # BPF_LD
            mode = code & 0xE0
            if mode == 0x20 and code & 0x18 == 0x00:  # ABS, word
                a = struct.unpack_from("<I", data, k)[0]
            elif mode == 0x00:  # IMM
                a = k
            elif mode == 0x60:  # MEM
                a = mem[k]
            else:
                raise ValueError(f"unknown load {code:#x}")
        elif cls == 0x01:  # BPF_LDX
            if code & 0xE0 == 0x00:
                x = k
            elif code & 0xE0 == 0x60:
                x = mem[k]
            else:
                raise ValueError(f"unknown ldx {code:#x}")
        elif cls == 0x02:  # BPF_ST
            mem[k] = a
        elif cls == 0x03:  # BPF_STX
            mem[k] = x
        elif cls == 0x04:  # BPF_ALU
            operand = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x80:  # NEG
                a = -a & U32
            elif op in ALU:
                a = ALU[op](a, operand) & U32
            else:
                raise ValueError(f"unknown alu {code:#x}")
        elif cls == 0x05:  # BPF_JMP
            op = code & 0xF0
            operand = x if code & 0x08 else k
            if op == 0x00:  # JA
                pc += k
                continue
            tests = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand,
                     0x40: bool(a & operand)}  # fmt: skip
            if op not in tests:
                raise ValueError(f"unknown jump {code:#x}")
            pc += jt if tests[op] else jf
        elif cls == 0x06:  # BPF_RET
            return a if code & 0x18 == 0x10 else k
        elif cls == 0x07:  # BPF_MISC
            if code == 0x07:  # TAX
                x = a
            elif code == 0x87:  # TXA
                a = x
            else:
                raise ValueError(f"unknown misc {code:#x}")
        else:
            raise ValueError(f"unknown class {code:#x}")


@pytest.fixture(scope="module")
def programs():
    tree, note = seccomp_module.compile_filter()
    if tree is None:
        pytest.skip(note)
    assert "binary search" in note, note
    original = sc.SyscallFilter.set_attr

    def refuse(self, attr, value):
        if attr == sc.Attr.CTL_OPTIMIZE:
            raise OSError(errno.EINVAL, "no binary tree in this libseccomp")
        return original(self, attr, value)

    sc.SyscallFilter.set_attr = refuse
    try:
        listed, listed_note = seccomp_module.compile_filter()
    finally:
        sc.SyscallFilter.set_attr = original
    assert "linear list" in listed_note, listed_note
    assert tree != listed
    return tree, listed


def decide(program: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64, **args: int) -> str:
    values = [0] * 6
    for key, value in args.items():
        values[int(key[1:])] = value
    action = run_bpf(program, nr, arch, tuple(values))
    if action == ALLOW:
        return "allow"
    if action & 0xFFFF0000 == ERRNO:
        return errno.errorcode[action & 0xFFFF]
    if action in (KILL_THREAD, KILL_PROCESS):
        return "kill"
    return hex(action)


def test_both_layouts_decide_as_dockers_profile(programs):
    for program in programs:
        assert decide(program, READ) == "allow"
        assert decide(program, MOUNT) == "EPERM"
        assert decide(program, UNSHARE) == "EPERM"
        assert decide(program, CLONE3) == "ENOSYS"
        assert decide(program, CLONE, a0=0x01200011) == "allow"  # fork()'s flags
        assert decide(program, CLONE, a0=0x01200011 | CLONE_NEWUSER) == "EPERM"
        assert decide(program, SOCKET, a0=2) == "allow"  # AF_INET
        assert decide(program, SOCKET, a0=40) == "EPERM"  # AF_VSOCK
        assert decide(program, PERSONALITY, a0=0) == "allow"
        assert decide(program, PERSONALITY, a0=0x0400000) == "EPERM"  # ADDR_NO_RANDOMIZE
        assert decide(program, 3, arch=AUDIT_ARCH_I386) == "kill"  # int 0x80
        assert decide(program, READ | X32_BIT) in ("kill", "EPERM")  # x32: never allowed


def test_the_tree_decides_every_system_call_number_as_the_list(programs):
    tree, listed = programs
    for nr in range(0, 1024):
        for arch in (AUDIT_ARCH_X86_64, AUDIT_ARCH_I386):
            assert decide(tree, nr, arch) == decide(listed, nr, arch), (nr, hex(arch))
        assert decide(tree, nr | X32_BIT) == decide(listed, nr | X32_BIT), nr


INTERESTING_ARGS = st.one_of(
    st.sampled_from([0, 1, 2, 8, 10, 40, 0x20000, 0x20008, U32, CLONE_NEWUSER, 0x7E020000]),
    st.integers(0, U32),
    st.integers(0, 2**64 - 1),
)


@settings(max_examples=400, deadline=None)
@given(
    nr=st.one_of(st.sampled_from([SOCKET, CLONE, PERSONALITY, CLONE3]), st.integers(0, 600)),
    args=st.tuples(*[INTERESTING_ARGS] * 6),
)
def test_the_tree_decides_any_arguments_as_the_list(programs, nr, args):
    tree, listed = programs
    assert run_bpf(tree, nr, AUDIT_ARCH_X86_64, args) == run_bpf(
        listed, nr, AUDIT_ARCH_X86_64, args
    )
