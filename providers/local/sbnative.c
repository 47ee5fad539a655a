/* The native part of a sandbox's PID 1 (sandbox_init.py): the same system calls as
 * sandbox_init._build and sandbox_init.harden, in C.
 *
 * Why: PID 1 is a process just forked from the Python zygote. Every Python object it touches
 * after the fork (reference counts are writes) costs a copy-on-write page fault, and those are
 * slow under this VM's PVM virtualisation: the root's ~35 mount-related calls took ~3 ms of
 * Python against ~1 ms of kernel time (strace -T, issue 17). Here they run with no Python.
 *
 * Built by scripts/setup.sh when a C compiler is present (into build/native/sbnative.so);
 * without it sandbox_init falls back to the Python path, and the provider's environment()
 * records which path is in use ("pid1_root"). Loaded by the zygote with ctypes before any
 * fork. Keep it behaviourally identical to the Python path: tests run both.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

/* Bumped whenever a signature changes; the Python side refuses a library of another ABI
 * (a stale build), and falls back. */
int sb_abi(void) { return 3; }

static const char *const PROC_READONLY[] = {"sys", "sysrq-trigger", "irq", "bus", "fs", NULL};
static const char *const DEV_NODES[] = {"null", "zero", "full", "random", "urandom", "tty", NULL};

/* Fill err with "what: strerror" (as the Python path's OSError says) and return -errno. */
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    int saved = errno;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s: %s", what, strerror(saved));
    return saved ? -saved : -EIO;
}

#define PATH(buf, ...)                                                      \
    do {                                                                    \
        if (snprintf(buf, sizeof buf, __VA_ARGS__) >= (int)sizeof buf) {    \
            errno = ENAMETOOLONG;                                           \
            return fail(err, errlen, "path too long");                      \
        }                                                                   \
    } while (0)

static int do_mount(char *err, size_t errlen, const char *src, const char *target,
                    const char *fstype, unsigned long flags, const char *data) {
    if (mount(src, target, fstype, flags, data) != 0)
        return fail(err, errlen, "mount %s on %s", fstype ? fstype : "bind", target);
    return 0;
}

int sb_title(const char *title, long long *host_pid, long long *starttime, char *err,
             size_t errlen);

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* sandbox_init.run's first steps, on entry to PID 1: die with the zygote (and at once if it
 * is already gone), stdio to /dev/null, every descriptor closed but keep[0..nkeep), the
 * host pid and start time (clock ticks since boot) read from the host's /proc, the argument
 * and environment strings blanked to ``title`` (sandbox_init.own_host_identity,
 * _linux.set_cmdline), the thread name set, a new session. */
int sb_enter(int lifeline_fd, int *keep, int nkeep, const char *title, long long *host_pid,
             long long *starttime, char *err, size_t errlen) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        return fail(err, errlen, "prctl(%d)", PR_SET_PDEATHSIG);
    struct pollfd lifeline = {.fd = lifeline_fd, .events = POLLIN};
    if (poll(&lifeline, 1, 0) > 0) /* the zygote died before the line above */
        _exit(1);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0)
        return fail(err, errlen, "open /dev/null");
    for (int fd = 0; fd < 3; fd++)
        if (dup2(null, fd) < 0)
            return fail(err, errlen, "dup2");
    qsort(keep, nkeep, sizeof *keep, cmp_int);
    unsigned int low = 3;
    for (int i = 0; i <= nkeep; i++) {
        unsigned int high = i < nkeep ? (unsigned int)keep[i] : ~0U;
        if (i < nkeep && keep[i] < 3)
            continue;
        if (high > low && syscall(SYS_close_range, low, high - 1, 0) != 0)
            for (unsigned int fd = low; fd < high && fd < 65536; fd++)
                close(fd);
        low = high + 1;
    }
    int rc = sb_title(title, host_pid, starttime, err, errlen);
    if (rc)
        return rc;
    if (setsid() < 0)
        return fail(err, errlen, "setsid");
    return 0;
}

/* Blank the argument and environment strings to ``title``, set the thread name
 * (_linux.set_cmdline, set_comm); host_pid and starttime (when not NULL): from the
 * /proc/self/stat read for it (sandbox_init.own_host_identity). */
int sb_title(const char *title, long long *host_pid, long long *starttime, char *err,
             size_t errlen) {
    char stat[2048];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, "open /proc/self/stat");
    ssize_t n = read(fd, stat, sizeof stat - 1);
    close(fd);
    if (n <= 0)
        return fail(err, errlen, "read /proc/self/stat");
    stat[n] = 0;
    char *rest = strrchr(stat, ')');
    if (rest == NULL) {
        errno = EINVAL;
        return fail(err, errlen, "parse /proc/self/stat");
    }
    /* fields after the command: 3 (state) is the first; 22 starttime, 48-51 the strings */
    unsigned long long field[52] = {0};
    char *p = rest + 2;
    for (int i = 3; i <= 51 && *p; i++) { /* field 3 (state) is a letter: stays 0 */
        field[i] = strtoull(p, NULL, 10);
        while (*p && *p != ' ')
            p++;
        while (*p == ' ')
            p++;
    }
    if (field[51] == 0) {
        errno = EINVAL;
        return fail(err, errlen, "parse /proc/self/stat");
    }
    if (host_pid)
        *host_pid = strtoll(stat, NULL, 10);
    if (starttime)
        *starttime = (long long)field[22];
    unsigned long long arg_start = field[48], arg_end = field[49];
    unsigned long long env_start = field[50], env_end = field[51];
    if (arg_end > arg_start) {
        size_t room = arg_end - arg_start, len = strlen(title);
        memset((void *)arg_start, 0, room);
        memcpy((void *)arg_start, title, len < room - 1 ? len : room - 1);
    }
    if (env_end > env_start)
        memset((void *)env_start, 0, env_end - env_start);
    if (prctl(PR_SET_NAME, title, 0, 0, 0) != 0)
        return fail(err, errlen, "prctl(PR_SET_NAME)");
    return 0;
}

/* sandbox_init.run's steps before the agent's fork: join the cgroups (write 0 to each
 * ``cgroup.procs``-like file of ``procs``, NUL-separated, ended by an empty string), bind
 * and listen on ``<d>/agent.sock`` (relative to ``d``: sun_path holds 108 bytes), then
 * unshare(NEWNS | NEWUTS | NEWIPC | NEWNET). *listener: the socket (close-on-exec). */
int sb_isolate(const char *d, const char *procs, int *listener, char *err, size_t errlen) {
    for (const char *path = procs; *path; path += strlen(path) + 1) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return fail(err, errlen, "open %s", path);
        if (write(fd, "0", 1) != 1) {
            int rc = fail(err, errlen, "write %s", path);
            close(fd);
            return rc;
        }
        close(fd);
    }
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return fail(err, errlen, "socket");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strcpy(addr.sun_path, "agent.sock");
    int rc = 0;
    if (chdir(d) != 0)
        rc = fail(err, errlen, "chdir %s", d);
    else if (bind(sock, (struct sockaddr *)&addr, sizeof addr) != 0)
        rc = fail(err, errlen, "bind %s/agent.sock", d);
    else if (listen(sock, 128) != 0)
        rc = fail(err, errlen, "listen");
    else if (chdir("/") != 0)
        rc = fail(err, errlen, "chdir /");
    else if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET) != 0)
        rc = fail(err, errlen, "unshare");
    if (rc) {
        close(sock);
        return rc;
    }
    *listener = sock;
    return 0;
}

/* sandbox_init._build_dev */
static int build_dev(char *err, size_t errlen, const char *dev, int userns) {
    char target[4096];
    int rc;
    if ((rc = do_mount(err, errlen, "tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC,
                       "mode=755,size=1m")))
        return rc;
    for (const char *const *name = DEV_NODES; *name; name++) {
        char src[64];
        PATH(target, "%s/%s", dev, *name);
        int fd = open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
        if (fd < 0)
            return fail(err, errlen, "open %s", target);
        close(fd);
        snprintf(src, sizeof src, "/dev/%s", *name);
        if ((rc = do_mount(err, errlen, src, target, NULL, MS_BIND, NULL)))
            return rc;
    }
    PATH(target, "%s/pts", dev);
    if (mkdir(target, 0777) != 0)
        return fail(err, errlen, "mkdir %s", target);
    char shm[4096];
    PATH(shm, "%s/shm", dev);
    if (mkdir(shm, 01777) != 0 || chmod(shm, 01777) != 0)
        return fail(err, errlen, "mkdir %s", shm);
    if ((rc = do_mount(err, errlen, "devpts", target, "devpts", MS_NOSUID | MS_NOEXEC,
                       userns ? "newinstance,ptmxmode=0666,mode=0620"
                              : "newinstance,ptmxmode=0666,mode=0620,gid=5")))
        return rc;
    if ((rc = do_mount(err, errlen, "tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")))
        return rc;
    static const char *const links[][2] = {
        {"ptmx", "pts/ptmx"},          {"fd", "/proc/self/fd"},
        {"stdin", "/proc/self/fd/0"},  {"stdout", "/proc/self/fd/1"},
        {"stderr", "/proc/self/fd/2"},
    };
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        PATH(target, "%s/%s", dev, links[i][0]);
        if (symlink(links[i][1], target) != 0)
            return fail(err, errlen, "symlink %s", target);
    }
    return 0;
}

/* _linux.loopback_up */
static int loopback_up(char *err, size_t errlen) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return fail(err, errlen, "socket");
    struct ifreq req;
    memset(&req, 0, sizeof req);
    strcpy(req.ifr_name, "lo");
    if (ioctl(sock, SIOCGIFFLAGS, &req) != 0 ||
        (req.ifr_flags |= IFF_UP, ioctl(sock, SIOCSIFFLAGS, &req) != 0)) {
        int rc = fail(err, errlen, "bring lo up");
        close(sock);
        return rc;
    }
    close(sock);
    return 0;
}

/* sandbox_init._build: the sandbox's root in the (already private) mount namespace.
 * dirs: the system directories, each NUL-terminated, the list ended by an empty string.
 * etc_mask: "" or the mask layer over /etc. Returns 0, or -errno with err filled. */
int sb_build(const char *d, const char *lower, const char *dirs, const char *etc_mask,
             int userns, const char *hostname, char *err, size_t errlen) {
    char merged[4096], fs[4096], target[4096], data[16384];
    const char *extra = userns ? ",userxattr" : "";
    int rc;
    PATH(merged, "%s/merged", d);
    PATH(fs, "%s/fs", d);
    if ((rc = do_mount(err, errlen, NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)))
        return rc;
    PATH(data, "lowerdir=%s,upperdir=%s/upper/top,workdir=%s/work/top%s", lower, fs, fs, extra);
    if ((rc = do_mount(err, errlen, "overlay", merged, "overlay", 0, data)))
        return rc;
    for (const char *name = dirs; *name; name += strlen(name) + 1) {
        char low[4096];
        if (strcmp(name, "etc") == 0 && *etc_mask)
            PATH(low, "%s:/etc", etc_mask); /* locked password hashes, no private keys */
        else
            PATH(low, "/%s", name);
        PATH(target, "%s/%s", merged, name);
        PATH(data, "lowerdir=%s,upperdir=%s/upper/%s,workdir=%s/work/%s%s", low, fs, name, fs,
             name, extra);
        if ((rc = do_mount(err, errlen, "overlay", target, "overlay", 0, data)))
            return rc;
    }
    static const char *const needed[] = {"proc", "sys", "dev", "tmp", NULL};
    for (const char *const *name = needed; *name; name++) { /* a user rootfs may lack them */
        PATH(target, "%s/%s", merged, *name);
        if (mkdir(target, 0777) != 0 && errno != EEXIST)
            return fail(err, errlen, "mkdir %s", target);
    }
    const unsigned long nsne = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    PATH(target, "%s/proc", merged);
    if ((rc = do_mount(err, errlen, "proc", target, "proc", nsne, NULL)))
        return rc;
    for (const char *const *name = PROC_READONLY; *name; name++) {
        struct stat st;
        PATH(target, "%s/proc/%s", merged, *name);
        if (stat(target, &st) != 0)
            continue;
        if ((rc = do_mount(err, errlen, target, target, NULL, MS_BIND, NULL)) ||
            (rc = do_mount(err, errlen, NULL, target, NULL,
                           MS_BIND | MS_REMOUNT | MS_RDONLY | nsne, NULL)))
            return rc;
    }
    PATH(target, "%s/sys", merged);
    (void)mount("sysfs", target, "sysfs", nsne | MS_RDONLY, NULL); /* a userns may refuse */
    PATH(target, "%s/dev", merged);
    if ((rc = build_dev(err, errlen, target, userns)))
        return rc;
    PATH(target, "%s/tmp", merged);
    if ((rc = do_mount(err, errlen, "tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
                       "mode=1777")))
        return rc;
    if (sethostname(hostname, strlen(hostname)) != 0)
        return fail(err, errlen, "sethostname");
    if ((rc = loopback_up(err, errlen)))
        return rc;
    if (chdir(merged) != 0)
        return fail(err, errlen, "chdir %s", merged);
    if (syscall(SYS_pivot_root, ".", ".") != 0)
        return fail(err, errlen, "pivot_root");
    if (umount2(".", MNT_DETACH) != 0)
        return fail(err, errlen, "umount2");
    if (chdir("/") != 0)
        return fail(err, errlen, "chdir /");
    return 0;
}

/* _linux.load_seccomp: the seccomp program (classic BPF, 8 bytes an instruction). */
int sb_seccomp(const unsigned char *bpf, size_t len, char *err, size_t errlen) {
    struct sock_fprog prog = {.len = (unsigned short)(len / 8),
                              .filter = (struct sock_filter *)bpf};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
        return fail(err, errlen, "prctl(PR_SET_SECCOMP)");
    return 0;
}

/* sandbox_init.harden: no_new_privs, not dumpable, then the seccomp program when len > 0. */
int sb_harden(const unsigned char *bpf, size_t len, char *err, size_t errlen) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return fail(err, errlen, "prctl(%d)", PR_SET_NO_NEW_PRIVS);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return fail(err, errlen, "prctl(%d)", PR_SET_DUMPABLE);
    return len ? sb_seccomp(bpf, len, err, errlen) : 0;
}
