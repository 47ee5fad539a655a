#!/usr/bin/env bash
# Creates .venv and installs sandbox-bench with its pinned dependencies.
# Usage: scripts/setup.sh [--system-test-deps]
#   --system-test-deps  also installs what the tests need from Debian (chromium for the
#                       browser test of the HTML report, xfsprogs and btrfs-progs for the
#                       local provider's reflink and snapshot tests); needs root.
# Idempotent: a second call with nothing changed does (almost) nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
want_system_test_deps=0
[[ "${1:-}" == "--system-test-deps" ]] && want_system_test_deps=1

apt_updated=0
apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: need root to apt-get install $*; install them and run again" >&2
        return 1
    fi
    if [[ $apt_updated -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Debian ships venv/ensurepip separately from python3.
if [[ ! -x .venv/bin/python ]]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        ver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        apt_install "python${ver}-venv" || apt_install python3-venv
        "$PYTHON" -m venv .venv
    fi
fi

# The local provider's syscall filter needs libseccomp (Debian's apt already depends on it;
# without it the filter is declared absent, not an error).
if ! ldconfig -p 2>/dev/null | grep 'libseccomp\.so\.2' >/dev/null; then
    apt_install libseccomp2 || echo "setup: no libseccomp2: local sandboxes run without a syscall filter" >&2
fi

# The local provider's native PID 1 steps (providers/local/sbnative.c: the sandbox's mounts,
# pivot_root and hardening without Python; ~0.5 ms of each create here). Built when a C
# compiler is present (apt's gcc otherwise, when root); without it the same steps run in
# Python, and the provider's environment() says which ("pid1_root").
native_src=providers/local/sbnative.c
native_lib=build/native/sbnative.so
if [[ ! -f $native_lib || $native_src -nt $native_lib ]]; then
    command -v cc >/dev/null || command -v gcc >/dev/null || apt_install gcc libc6-dev \
        || echo "setup: no C compiler: local sandboxes build their root in Python" >&2
    compiler=$(command -v cc || command -v gcc || true)
    if [[ -n $compiler ]]; then
        mkdir -p build/native
        "$compiler" -O2 -Wall -shared -fPIC -o "$native_lib.tmp" "$native_src" \
            && mv "$native_lib.tmp" "$native_lib" \
            || echo "setup: could not build $native_lib: local sandboxes build their root in Python" >&2
    fi
fi
# The compiled exec agent (providers/local/sbagent.c), exec'd by each sandbox's PID 1 instead
# of forking the Python agent (~350 page faults fewer per create). Static when libc.a is
# there (fewer pages to map at exec), else dynamic; without it the Python agent serves.
agent_src=providers/local/sbagent.c
agent_bin=build/native/sb-agent
if [[ -f $agent_src && ( ! -f $agent_bin || $agent_src -nt $agent_bin ) ]]; then
    compiler=$(command -v cc || command -v gcc || true)
    if [[ -n $compiler ]]; then
        mkdir -p build/native
        { "$compiler" -O2 -Wall -static -pthread -o "$agent_bin.tmp" "$agent_src" 2>/dev/null \
            || "$compiler" -O2 -Wall -pthread -o "$agent_bin.tmp" "$agent_src"; } \
            && mv "$agent_bin.tmp" "$agent_bin" \
            || echo "setup: could not build $agent_bin: sandboxes fork the Python agent" >&2
    fi
fi

# The compiled PID 1 (providers/local/sbinit.c with sbnative.c's steps), which the zygote
# starts with posix_spawn instead of forking itself (~470 copy-on-write faults fewer per
# create here); it needs sb-agent too. Without it each sandbox's PID 1 is a fork.
init_src=providers/local/sbinit.c
init_bin=build/native/sb-init
if [[ -f $init_src && ( ! -f $init_bin || $init_src -nt $init_bin || $native_src -nt $init_bin ) ]]; then
    compiler=$(command -v cc || command -v gcc || true)
    if [[ -n $compiler ]]; then
        mkdir -p build/native
        { "$compiler" -O2 -Wall -static -o "$init_bin.tmp" "$init_src" "$native_src" 2>/dev/null \
            || "$compiler" -O2 -Wall -o "$init_bin.tmp" "$init_src" "$native_src"; } \
            && mv "$init_bin.tmp" "$init_bin" \
            || echo "setup: could not build $init_bin: each sandbox's PID 1 is a fork of the zygote" >&2
    fi
fi

stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp || constraints.txt -nt $stamp ]]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[clouds,test]'
    touch $stamp
fi

# The built-in agent tasks' files (pip_install, git_clone, build_test): pinned wheels and sdists
# downloaded from PyPI with pip, and a git bundle built from them, into ~/.cache/sandbox-bench
# (or $SANDBOX_BENCH_CACHE); nothing is fetched while a benchmark runs. Idempotent: files
# already there as pinned are kept. Building the bundle needs git.
command -v git >/dev/null || apt_install git || echo "setup: no git: git_clone's bundle cannot be built" >&2
.venv/bin/python -m bench.workloads.fetch_agent_data --quiet

if [[ $want_system_test_deps -eq 1 ]]; then
    command -v chromium >/dev/null || apt_install chromium
    # The local provider's copy-on-write layer copies are tested on XFS and btrfs images.
    command -v mkfs.xfs >/dev/null || apt_install xfsprogs
    command -v mkfs.btrfs >/dev/null || apt_install btrfs-progs
fi
