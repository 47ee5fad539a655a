"""The syscall filter of local sandboxes, modelled on Docker's default seccomp profile.

Source of the model: moby's ``profiles/seccomp/default.json`` (default action ``EPERM``, an
allow-list of ~370 system calls, a few allowed only with certain arguments, and some allowed
only to containers granted extra capabilities). A local sandbox holds Docker's default
capability set minus CAP_MKNOD, so the profile's capability-gated entries reduce to
``chroot`` (CAP_SYS_CHROOT) being allowed and everything gated on CAP_SYS_ADMIN,
CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_TIME, CAP_BPF, CAP_PERFMON, CAP_SYSLOG ... refused:

* refused (EPERM): ``unshare``, ``setns``, ``mount`` and the new mount API, ``umount2``,
  ``pivot_root``, ``bpf``, ``perf_event_open``, ``keyctl``/``add_key``/``request_key``,
  ``kexec_*``, ``*_module``, ``reboot``, ``swapon``/``swapoff``, ``acct``, ``quotactl``,
  ``userfaultfd``, ``fanotify_init``, ``open_by_handle_at``, ``process_madvise``,
  ``pidfd_getfd``, ``kcmp``, ``settimeofday``/``clock_settime``, ``syslog``, ``iopl``,
  ``ioperm``, ``sethostname``, ``setdomainname``, ``personality`` other than the five values
  Docker allows, ``socket(AF_VSOCK)``, and any system call the list does not name;
* ``clone`` with any namespace flag (so no new user, mount, pid, net... namespace: ``unshare
  -U`` and ``clone(CLONE_NEWUSER)`` both fail), ``clone3`` answered ENOSYS (its flags live
  in memory a filter cannot read; glibc then falls back to ``clone``);
* allowed as Docker allows them on kernels >= 4.8: ``ptrace``, ``process_vm_readv/writev``
  (a sandbox's processes can debug each other; they cannot name a process outside their pid
  namespace, nor trace its PID 1 or agent, which are not dumpable);
* only the native ABI (x86-64 here): a system call made through another ABI (i386 ``int
  0x80``, x32) kills the thread, closing that classic way around a filter.

The filter is compiled to BPF once per provider by libseccomp (through ``pyseccomp``, a
ctypes binding with the interface of libseccomp's own Python bindings; Debian's
``python3-seccomp`` is not importable from a virtualenv) and loaded by each sandbox's PID 1
and agent with one prctl (_linux.load_seccomp), inherited by every command. Where
libseccomp or the binding is missing, :func:`compile_filter` says why and the provider runs
without a filter and declares so in its capability notes.
"""

from __future__ import annotations

import errno
import platform
import tempfile

#: moby profiles/seccomp/default.json, the unconditional SCMP_ACT_ALLOW list.
ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup
dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2
epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat
faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchown
fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr
fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex
futex_time64 futex_waitv futimesat getcpu getcwd getdents getdents64 getegid getegid32
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday
getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get
ioprio_set io_setup io_submit io_uring_enter io_uring_register io_uring_setup ipc kill
landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr
link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64
madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv
msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open
openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease
pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv
recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat
renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select
semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg
sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32
setitimer setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid
setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area
set_tid_address setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack
signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs
statfs64 statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()  # noqa: SIM905 - the profile's names in its order, easy to compare
#: Allowed by the profile for kernels >= 4.8, for CAP_SYS_CHROOT, and on x86.
ALLOWED_CONDITIONALLY = ("ptrace", "process_vm_readv", "process_vm_writev", "chroot")
ALLOWED_X86 = ("arch_prctl", "modify_ldt")
#: personality(2) values the profile allows (PER_LINUX, PER_LINUX32, UNAME26 variants, query).
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
#: CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
#: CLONE_NEWPID | CLONE_NEWNET: clone may set none of them.
CLONE_NAMESPACE_FLAGS = 0x7E020000
AF_VSOCK = 40
DESCRIPTION = (
    "Docker's default seccomp profile for Docker's default capabilities, compiled by "
    "libseccomp: EPERM for unshare, setns, mount, bpf, perf_event_open, keyctl and every "
    "unlisted system call; clone only without namespace flags; clone3 ENOSYS; native ABI only"
)


def compile_filter() -> tuple[bytes | None, str]:
    """``(bpf, description)``, or ``(None, why there is no filter)``."""
    try:
        import pyseccomp as sc
    except ImportError:
        return None, "no seccomp filter: the pyseccomp package is not installed"
    except (OSError, RuntimeError) as exc:  # pyseccomp raises when libseccomp is missing
        return None, f"no seccomp filter: libseccomp is not usable ({exc})"
    try:
        f = sc.SyscallFilter(sc.ERRNO(errno.EPERM))
        layout = "a binary search on the system call number"
        try:
            # A binary tree rather than libseccomp's default linear list: loading the filter
            # (the kernel emulates it for every system call number to build its action
            # cache) took 685 us p50 here for the list and 186 us for the tree, twice per
            # sandbox; every system call a sandbox makes is checked in ~9 comparisons
            # instead of up to ~370. Same decisions (tests/test_seccomp_filter.py).
            f.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
        except (OSError, ValueError, AttributeError):  # libseccomp < 2.5
            layout = "a linear list (libseccomp < 2.5 has no binary tree)"
        skipped = []
        names = ALLOWED + list(ALLOWED_CONDITIONALLY)
        if platform.machine() in ("x86_64", "i686", "i386"):
            names += list(ALLOWED_X86)
        for name in names:
            try:
                f.add_rule(sc.ALLOW, name)
            except (OSError, ValueError):
                skipped.append(name)  # unknown to this libseccomp or this architecture
        for value in PERSONALITIES:
            f.add_rule(sc.ALLOW, "personality", sc.Arg(0, sc.EQ, value))
        f.add_rule(sc.ALLOW, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NAMESPACE_FLAGS, 0))
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        f.add_rule(sc.ALLOW, "socket", sc.Arg(0, sc.NE, AF_VSOCK))
        with tempfile.TemporaryFile() as out:
            f.export_bpf(out)
            out.seek(0)
            bpf = out.read()
    except OSError as exc:
        return None, f"no seccomp filter: libseccomp refused the profile ({exc})"
    if not bpf or len(bpf) % 8:
        return None, "no seccomp filter: libseccomp produced no program"
    note = f"{DESCRIPTION}; compiled as {layout}"
    return bpf, note + (f" ({len(skipped)} unknown names skipped)" if skipped else "")
