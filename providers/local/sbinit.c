/* sb-init: a sandbox's PID 1 as a small static program (sandbox_init.run in C).
 *
 * Why: PID 1 used to be a fork of the Python zygote. On this VM a page fault costs ~3.3 us;
 * that fork cost ~325 copy-on-write faults in PID 1 before the sandbox was ready and ~143
 * more in the zygote (its own pages, now shared), ~1.5 ms of CPU per create, mostly on the
 * create's critical path. The zygote now starts this program with posix_spawn (vfork +
 * exec: no page tables copied, no copy-on-write in either process). It does what
 * sandbox_init.run does with the compiled helper loaded, in the same order, with the same
 * results (tests/test_local_native.py compares the two sandboxes), reusing sbnative.c's
 * functions (sb_enter, sb_isolate, sb_build, sb_harden, sb_seccomp).
 *
 * Build:  cc -O2 -Wall -Wextra -static -o build/native/sb-init \
 *             providers/local/sbinit.c providers/local/sbnative.c
 *
 * Interface: argv is ["sb-init"], the environment is empty; the zygote has called
 * unshare(CLONE_NEWPID) first, so this process is PID 1 of a new pid namespace.
 *   fd 0-2  /dev/null.
 *   fd 3    the spec pipe (read end), written in full and closed by the zygote before the
 *           spawn; read to EOF (format below).
 *   fd 4    the zygote's lifeline pipe (read end): HUP once the zygote is gone.
 *   fd 5    the ready pipe (write end): "ok <host_pid> <starttime>\n" once the sandbox is
 *           ready, or "error <Class>: <message>\n" (then exit 1), as sandbox_init.run.
 *   fd 6    the sandbox's end of the socket pair (the agent's first connection).
 *   fd 7    only when the spec has a "dirs" record: the pipe saying whether the provider
 *           made the sandbox directory ("d"; anything else fails the create).
 * Capabilities: the zygote gives its inheritable set the full permitted set before it cuts
 * the bounding set, so that this exec'd program keeps the capabilities a forked PID 1 would
 * have (root's exec grants inheritable | bounding); the first thing after sb_enter is to put
 * the inheritable set back (the spec's "capinh"), so the agent and every command get only
 * the bounding set, as before.
 *
 * Spec format: the header "sb-init spec 1\0", then records, then "end\0" and EOF. A record
 * is a key and its fields, each NUL-terminated (no field may contain a NUL); the seccomp
 * record's second field is a length and that many raw bytes follow it. Keys, with fields:
 *   dir PATH            the sandbox directory (spec["dir"])              required
 *   agent PATH          the compiled agent (sb-agent)                      required
 *   lower PATH          the root's lower layer (spec["lower"])             required
 *   hostname NAME       (spec["hostname"])                                 required
 *   userns 0|1          (spec["userns"])                                   required
 *   etc_mask PATH       (spec["etc_mask"], when set)
 *   sysdir NAME         one per spec["system_dirs"] entry, in order
 *   dirs                fd 7 is the dirs pipe; without it: layer records (_make_layers)
 *   layer NAME          one per spec["layers"] entry (used only without "dirs")
 *   cgroup              the sandbox has cgroups (no <dir>/pid is written)
 *   procs PATH          one per cgroup["procs"] entry: joined in order
 *   mkdirs PATH | mkdir PATH | write PATH VALUE | write? PATH VALUE
 *                       cgroup["create"] steps, in order ("write?": failures ignored)
 *   capinh HEX          the inheritable capability set to restore (64 bits)
 *   seccomp LEN BYTES   the seccomp program (classic BPF), LEN bytes
 * A malformed spec: "error ValueError: malformed sb-init spec: ..." and exit 1.
 *
 * After the ready line PID 1 reaps forever (sandbox_init._reap_forever) and restarts a dead
 * agent: it forks (cheap: this process is small) and execs the agent through a descriptor
 * opened O_PATH before pivot_root (the host's path is gone after it), with no go and no
 * first connection. That descriptor stays open in PID 1 (close-on-exec).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The zygote (zygote.py INIT_ABI_MARK) spawns this program only if its file carries this
 * string: change the number with the descriptor interface or the spec format. */
__attribute__((used)) static const char ABI_MARK[] = "sb-init abi 1";

#define SPEC_FD 3
#define LIFELINE_FD 4
#define READY_FD 5
#define CONN_FD 6
#define DIRS_FD 7
#define TITLE "sb-init"
#define MAX_SPEC (16 << 20)
#define AGENT_RESTARTS_PER_MINUTE 10 /* sandbox_init.AGENT_RESTARTS_PER_MINUTE */

/* sbnative.c */
int sb_enter(int lifeline_fd, int *keep, int nkeep, const char *title, long long *host_pid,
             long long *starttime, char *err, size_t errlen);
int sb_isolate(const char *d, const char *procs, int *listener, char *err, size_t errlen);
int sb_build(const char *d, const char *lower, const char *dirs, const char *etc_mask,
             int userns, const char *hostname, char *err, size_t errlen);
int sb_seccomp(const unsigned char *bpf, size_t len, char *err, size_t errlen);
int sb_harden(const unsigned char *bpf, size_t len, char *err, size_t errlen);

static char err[1024];

/* ---- reporting ---------------------------------------------------------------------- */

/* The Python exception class an OSError with this errno becomes (PEP 3151). */
static const char *os_error_class(int e) {
    switch (e) {
    case EAGAIN: case EALREADY: case EINPROGRESS: return "BlockingIOError";
    case ECHILD: return "ChildProcessError";
    case EPIPE: case ESHUTDOWN: return "BrokenPipeError";
    case ECONNABORTED: return "ConnectionAbortedError";
    case ECONNREFUSED: return "ConnectionRefusedError";
    case ECONNRESET: return "ConnectionResetError";
    case EEXIST: return "FileExistsError";
    case ENOENT: return "FileNotFoundError";
    case EINTR: return "InterruptedError";
    case EISDIR: return "IsADirectoryError";
    case ENOTDIR: return "NotADirectoryError";
    case EACCES: case EPERM: return "PermissionError";
    case ESRCH: return "ProcessLookupError";
    case ETIMEDOUT: return "TimeoutError";
    default: return "OSError";
    }
}

/* Report "error <line>" on the ready pipe and exit 1 (sandbox_init.run's except clause). */
static void die(const char *fmt, ...) {
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (n > (int)sizeof line - 2)
        n = sizeof line - 2;
    for (int i = 0; i < n; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[n++] = '\n';
    if (write(READY_FD, "error ", 6) == 6 && write(READY_FD, line, n) < 0) {
        /* nothing more to say */
    }
    _exit(1);
}

/* A failed sbnative.c call: Python raises OSError(-rc, err), whose class follows errno. */
static void die_native(int rc) { die("%s: [Errno %d] %s", os_error_class(-rc), -rc, err); }

/* A failed system call on a path, as Python's os functions report it. */
static void die_path(const char *path) {
    int e = errno;
    die("%s: [Errno %d] %s: '%s'", os_error_class(e), e, strerror(e), path);
}

static void die_errno(void) {
    int e = errno;
    die("%s: [Errno %d] %s", os_error_class(e), e, strerror(e));
}

/* ---- the spec ----------------------------------------------------------------------- */

struct step {
    const char *kind, *path, *value; /* kind: "mkdirs", "mkdir", "write", "write?" */
};

static struct {
    const char *dir, *agent, *lower, *hostname, *etc_mask;
    int userns, dirs, cgroup, has_capinh;
    unsigned long long capinh;
    const char **layers, **sysdirs, **procs;
    int nlayers, nsysdirs, nprocs;
    struct step *steps;
    int nsteps;
    const unsigned char *seccomp;
    size_t seccomp_len;
} spec;

#define MALFORMED(...) die("ValueError: malformed sb-init spec: " __VA_ARGS__)

/* The next NUL-terminated field at *p (before end), or a malformed-spec error. */
static const char *field(char **p, char *end, const char *key) {
    char *nul = memchr(*p, 0, end - *p);
    if (nul == NULL)
        MALFORMED("record %s cut short", key);
    const char *f = *p;
    *p = nul + 1;
    return f;
}

static void push(const char ***list, int *n, const char *value) {
    const char **grown = realloc(*list, (*n + 1) * sizeof **list);
    if (grown == NULL)
        MALFORMED("out of memory");
    grown[(*n)++] = value;
    *list = grown;
}

static void read_spec(void) {
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL)
            MALFORMED("out of memory");
        if (len == cap) {
            if (cap >= MAX_SPEC)
                MALFORMED("larger than %d bytes", MAX_SPEC);
            cap *= 2;
            buf = realloc(buf, cap);
            continue;
        }
        ssize_t n = read(SPEC_FD, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die_errno();
        if (n == 0)
            break;
        len += n;
    }
    close(SPEC_FD);
    static const char header[] = "sb-init spec 1";
    char *p = buf, *end = buf + len;
    if (len < sizeof header || memcmp(buf, header, sizeof header) != 0)
        MALFORMED("no header");
    p += sizeof header;
    int ended = 0;
    while (p < end) {
        const char *key = field(&p, end, "key");
        if (strcmp(key, "end") == 0) {
            ended = 1;
            break;
        } else if (strcmp(key, "dir") == 0) {
            spec.dir = field(&p, end, key);
        } else if (strcmp(key, "agent") == 0) {
            spec.agent = field(&p, end, key);
        } else if (strcmp(key, "lower") == 0) {
            spec.lower = field(&p, end, key);
        } else if (strcmp(key, "hostname") == 0) {
            spec.hostname = field(&p, end, key);
        } else if (strcmp(key, "etc_mask") == 0) {
            spec.etc_mask = field(&p, end, key);
        } else if (strcmp(key, "userns") == 0) {
            const char *v = field(&p, end, key);
            if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
                MALFORMED("userns %s", v);
            spec.userns = v[0] == '1';
        } else if (strcmp(key, "dirs") == 0) {
            spec.dirs = 1;
        } else if (strcmp(key, "cgroup") == 0) {
            spec.cgroup = 1;
        } else if (strcmp(key, "layer") == 0) {
            push(&spec.layers, &spec.nlayers, field(&p, end, key));
        } else if (strcmp(key, "sysdir") == 0) {
            push(&spec.sysdirs, &spec.nsysdirs, field(&p, end, key));
        } else if (strcmp(key, "procs") == 0) {
            push(&spec.procs, &spec.nprocs, field(&p, end, key));
        } else if (strcmp(key, "mkdirs") == 0 || strcmp(key, "mkdir") == 0 ||
                   strcmp(key, "write") == 0 || strcmp(key, "write?") == 0) {
            struct step s = {.kind = key, .path = field(&p, end, key)};
            if (key[0] == 'w')
                s.value = field(&p, end, key);
            struct step *grown = realloc(spec.steps, (spec.nsteps + 1) * sizeof *grown);
            if (grown == NULL)
                MALFORMED("out of memory");
            grown[spec.nsteps++] = s;
            spec.steps = grown;
        } else if (strcmp(key, "capinh") == 0) {
            const char *v = field(&p, end, key);
            char *rest;
            errno = 0;
            spec.capinh = strtoull(v, &rest, 16);
            if (!*v || *rest || errno)
                MALFORMED("capinh %s", v);
            spec.has_capinh = 1;
        } else if (strcmp(key, "seccomp") == 0) {
            const char *v = field(&p, end, key);
            char *rest;
            errno = 0;
            unsigned long long n = strtoull(v, &rest, 10);
            if (!*v || *rest || errno || n % 8 || n > (unsigned long long)(end - p))
                MALFORMED("seccomp length %s", v);
            spec.seccomp = (const unsigned char *)p;
            spec.seccomp_len = n;
            p += n;
        } else {
            MALFORMED("unknown key %.40s", key);
        }
    }
    if (!ended)
        MALFORMED("no end record (cut short)");
    if (p != end)
        MALFORMED("data after the end record");
    if (!spec.dir || !spec.agent || !spec.lower || !spec.hostname)
        MALFORMED("dir, agent, lower or hostname missing");
    if (!spec.etc_mask)
        spec.etc_mask = "";
}

/* A NUL-separated list ended by an empty string (sbnative.c's list arguments). */
static char *packed(const char **items, int n) {
    size_t size = 1;
    for (int i = 0; i < n; i++)
        size += strlen(items[i]) + 1;
    char *out = malloc(size), *q = out;
    if (out == NULL)
        MALFORMED("out of memory");
    for (int i = 0; i < n; i++) {
        size_t l = strlen(items[i]) + 1;
        memcpy(q, items[i], l);
        q += l;
    }
    *q = 0;
    return out;
}

/* ---- steps before the root ---------------------------------------------------------- */

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void mkdir_or_die(const char *path) {
    if (mkdir(path, 0777) != 0)
        die_path(path);
}

/* sandbox_init._make_layers */
static void make_layers(void) {
    static const char *const kinds[] = {"upper", "work"};
    char base[4096], path[8192];
    for (int k = 0; k < 2; k++) {
        snprintf(base, sizeof base, "%s/fs/%s", spec.dir, kinds[k]);
        if (!is_dir(base))
            mkdir_or_die(base);
        for (int i = 0; i < spec.nlayers; i++) {
            snprintf(path, sizeof path, "%s/%s", base, spec.layers[i]);
            if (!is_dir(path))
                mkdir_or_die(path);
        }
    }
}

/* Python's ``with open(path, "w") as f: f.write(value)``: 0, or -1 with errno and *opened
 * saying whether the open succeeded (its error names the path; a write's does not). */
static int write_file(const char *path, const char *value, int *opened) {
    *opened = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return -1;
    *opened = 1;
    size_t len = strlen(value), done = 0;
    while (done < len) {
        ssize_t n = write(fd, value + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        done += n;
    }
    return close(fd) == 0 || errno == EINTR ? 0 : -1;
}

/* os.makedirs(path, exist_ok=True) */
static int make_dirs(const char *path) {
    if (is_dir(path))
        return 0;
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        if (make_dirs(parent) != 0)
            return -1;
    }
    if (mkdir(path, 0777) != 0 && !(errno == EEXIST && is_dir(path)))
        return -1;
    return 0;
}

/* sandbox_init.run_steps */
static void run_steps(void) {
    for (int i = 0; i < spec.nsteps; i++) {
        struct step *s = &spec.steps[i];
        if (strcmp(s->kind, "mkdirs") == 0) {
            if (make_dirs(s->path) != 0)
                die_path(s->path);
        } else if (strcmp(s->kind, "mkdir") == 0) {
            mkdir_or_die(s->path);
        } else {
            int opened;
            if (write_file(s->path, s->value, &opened) != 0 && s->kind[5] != '?') {
                if (!opened)
                    die_path(s->path);
                die_errno();
            }
        }
    }
}

/* The inheritable capability set back to the zygote's own (see the top of this file). */
static void restore_inheritable(void) {
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0)
        die("%s: [Errno %d] capget: %s", os_error_class(errno), errno, strerror(errno));
    data[0].inheritable = (unsigned int)spec.capinh;
    data[1].inheritable = (unsigned int)(spec.capinh >> 32);
    if (syscall(SYS_capset, &header, data) != 0)
        die("%s: [Errno %d] capset: %s", os_error_class(errno), errno, strerror(errno));
}

/* ---- the agent ---------------------------------------------------------------------- */

/* A pipe holding the agent's configuration (sbagent.c fd 6), written in full: its read end,
 * or -1 with errno. */
static int config_pipe(long long host_pid, long long starttime, const unsigned char *bpf,
                       size_t len) {
    char header[96];
    int hl = snprintf(header, sizeof header, "%lld %lld %zu\n", host_pid, starttime, len);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    const char *parts[2] = {header, (const char *)bpf};
    size_t sizes[2] = {(size_t)hl, len};
    for (int i = 0; i < 2; i++)
        for (size_t done = 0; done < sizes[i];) {
            ssize_t n = write(fds[1], parts[i] + done, sizes[i] - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                int e = errno;
                close(fds[0]);
                close(fds[1]);
                errno = e;
                return -1;
            }
            done += n;
        }
    close(fds[1]);
    return fds[0];
}

/* sandbox_init._spawn_agent: the first agent, posix_spawn'd (vfork + exec) with its
 * listener, first connection, go pipe and configuration at fds 3, 4, 5, 6. */
static pid_t spawn_agent(int listener, int go_r, long long host_pid, long long starttime) {
    char header[96];
    int hl = snprintf(header, sizeof header, "%lld %lld %zu\n", host_pid, starttime,
                      spec.seccomp_len);
    if (hl + spec.seccomp_len > 65536) /* must fit the pipe: written before the spawn */
        die("RuntimeError: seccomp filter too large for the agent's pipe: %zu B",
            spec.seccomp_len);
    int config_r = config_pipe(host_pid, starttime, spec.seccomp, spec.seccomp_len);
    if (config_r < 0)
        die_errno();
    /* Above every target, so that no dup2 of the list overwrites a later source. */
    int sources[4] = {listener, CONN_FD, go_r, config_r}, high[4];
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    for (int i = 0; i < 4; i++) {
        high[i] = fcntl(sources[i], F_DUPFD_CLOEXEC, 16);
        if (high[i] < 0)
            die_errno();
    }
    for (int i = 0; i < 4; i++)
        posix_spawn_file_actions_adddup2(&actions, high[i], 3 + i);
    char *argv[] = {"sb-agent", NULL}, *envp[] = {NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, spec.agent, &actions, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    for (int i = 0; i < 4; i++)
        close(high[i]);
    close(config_r);
    if (rc != 0) {
        errno = rc;
        die_path(spec.agent);
    }
    return pid;
}

/* A restarted agent (sandbox_init._reap_forever): forked from this small process and
 * exec'd through agent_fd, opened O_PATH before pivot_root (the host path is out of reach
 * now). No go and no first connection: it enters /root and serves at once. Its
 * configuration carries no filter: PID 1's own (loaded after the go, before any restart)
 * is inherited across fork and exec (no_new_privs is set), so it runs under it.
 *
 * Unlike a forked agent, an exec'd one is dumpable until its first instruction (sbagent.c
 * sets PR_SET_DUMPABLE 0 before anything else), so a sandbox process could ptrace it in that
 * window. That is accepted: it holds no more than the sandbox's own root does (the
 * bounding set's capabilities, since PID 1's inheritable set was put back; the same seccomp
 * filter, inherited; no_new_privs), except its listening socket: a sandbox process that won
 * that race could answer the provider's later requests itself, i.e. report invented exec
 * results, which a workload's own code can do anyway through its output. Only restarts
 * (after an agent died) take this path; the first agent is started before any sandbox
 * process exists. Its name (comm) is "sb-agent" from argv[0] on Linux >= 6.14; older
 * kernels name an AT_EMPTY_PATH exec after the descriptor's number. Returns the pid, or -1
 * with errno (fork or pipe failed). */
static pid_t restart_agent(int listener, int agent_fd, long long host_pid,
                           long long starttime) {
    int config_r = config_pipe(host_pid, starttime, NULL, 0);
    if (config_r < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        int l = fcntl(listener, F_DUPFD_CLOEXEC, 16);
        int c = fcntl(config_r, F_DUPFD_CLOEXEC, 16);
        int a = fcntl(agent_fd, F_DUPFD_CLOEXEC, 16);
        if (l < 0 || c < 0 || a < 0 || dup2(l, 3) != 3 || dup2(c, 6) != 6)
            _exit(127);
        close(4); /* no first connection, no go: sbagent.c checks that fds 4, 5 are closed */
        close(5);
        char *argv[] = {"sb-agent", NULL}, *envp[] = {NULL};
        syscall(SYS_execveat, a, "", argv, envp, AT_EMPTY_PATH);
        _exit(127);
    }
    int e = errno;
    close(config_r);
    errno = e;
    return pid;
}

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* sandbox_init._reap_forever */
static void reap_forever(int listener, int agent_fd, pid_t agent_pid, long long host_pid,
                         long long starttime) {
    signal(SIGINT, SIG_IGN);
    double restarts[AGENT_RESTARTS_PER_MINUTE + 1];
    int nrestarts = 0;
    for (;;) {
        pid_t pid = waitpid(-1, NULL, 0);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid < 0) /* ECHILD: cannot happen while the agent lives; restart it if it does */
            pid = agent_pid;
        if (pid != agent_pid)
            continue;
        double now = monotonic();
        int kept = 0;
        for (int i = 0; i < nrestarts; i++)
            if (now - restarts[i] < 60)
                restarts[kept++] = restarts[i];
        restarts[kept++] = now;
        nrestarts = kept;
        if (nrestarts > AGENT_RESTARTS_PER_MINUTE)
            _exit(1); /* the sandbox is broken: PID 1 exits and the provider sees it */
        while ((agent_pid = restart_agent(listener, agent_fd, host_pid, starttime)) < 0) {
            struct timespec pause = {0, 50 * 1000 * 1000}; /* pids.max reached: wait */
            nanosleep(&pause, NULL);
        }
    }
}

/* ---- main --------------------------------------------------------------------------- */

int main(void) {
    /* The signal dispositions a PID 1 forked from the zygote has (zygote._spawn): SIGCHLD,
     * SIGTERM, SIGHUP default; SIGINT and SIGPIPE ignored (the agent inherits these). */
    signal(SIGCHLD, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    int keep[4] = {SPEC_FD, READY_FD, CONN_FD, DIRS_FD};
    int nkeep = fcntl(DIRS_FD, F_GETFD) >= 0 ? 4 : 3;
    long long host_pid, starttime;
    int rc = sb_enter(LIFELINE_FD, keep, nkeep, TITLE, &host_pid, &starttime, err, sizeof err);
    if (rc)
        die_native(rc);
    read_spec();
    if (spec.dirs != (nkeep == 4))
        MALFORMED("a dirs record %s descriptor 7", spec.dirs ? "without" : "but no dirs on");
    if (spec.has_capinh)
        restore_inheritable();
    if (spec.dirs) { /* the provider is making the directory meanwhile */
        char made = 0;
        ssize_t n;
        while ((n = read(DIRS_FD, &made, 1)) < 0 && errno == EINTR)
            ;
        if (n < 0)
            die_errno();
        close(DIRS_FD);
        if (n != 1 || made != 'd')
            die("RuntimeError: the provider could not make the sandbox directory");
    } else { /* restore or fork: the layer came first; overlay needs the work directories */
        make_layers();
    }
    if (!spec.cgroup) { /* without cgroups a reaper finds PID 1 by pid and start time */
        char path[4096], line[64];
        snprintf(path, sizeof path, "%s/pid", spec.dir);
        snprintf(line, sizeof line, "%lld %lld\n", host_pid, starttime);
        int opened;
        if (write_file(path, line, &opened) != 0) {
            if (!opened)
                die_path(path);
            die_errno();
        }
    } else {
        run_steps();
    }
    int listener;
    if ((rc = sb_isolate(spec.dir, packed(spec.procs, spec.nprocs), &listener, err,
                         sizeof err)))
        die_native(rc);
    int agent_fd = open(spec.agent, O_PATH | O_CLOEXEC); /* for restarts, after pivot_root */
    if (agent_fd < 0)
        die_path(spec.agent);
    int go[2];
    if (pipe2(go, O_CLOEXEC) != 0)
        die_errno();
    pid_t agent_pid = spawn_agent(listener, go[0], host_pid, starttime);
    close(go[0]);
    close(CONN_FD);
    if ((rc = sb_build(spec.dir, spec.lower, packed(spec.sysdirs, spec.nsysdirs),
                       spec.etc_mask, spec.userns, spec.hostname, err, sizeof err)))
        die_native(rc);
    if ((rc = sb_harden(NULL, 0, err, sizeof err)))
        die_native(rc);
    ssize_t n;
    while ((n = write(go[1], "g", 1)) < 0 && errno == EINTR)
        ;
    if (n < 0 && errno == EPIPE)
        die("RuntimeError: the agent exited before its go");
    if (n < 0)
        die_errno();
    close(go[1]);
    /* PID 1's own filter comes after the go, off the create's path (sandbox_init.run). */
    if (spec.seccomp_len && (rc = sb_seccomp(spec.seccomp, spec.seccomp_len, err, sizeof err)))
        die_native(rc);
    char ok[96];
    int len = snprintf(ok, sizeof ok, "ok %lld %lld\n", host_pid, starttime);
    if (write(READY_FD, ok, len) != len)
        _exit(1);
    close(READY_FD);
    reap_forever(listener, agent_fd, agent_pid, host_pid, starttime);
    return 1;
}
