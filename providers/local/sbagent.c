/* sb-agent: the sandbox's exec agent in C, a port of providers/local/agent.py.
 *
 * Why it exists: the Python agent is forked from a Python process, and on this VM each page
 * fault costs ~3 us; the forked agent takes ~354 copy-on-write faults (~1.1 ms of CPU) before
 * it answers its first ping. This program is exec'd instead (posix_spawn by the sandbox's
 * PID 1, before PID 1 mounts the sandbox's root), links statically and touches a few dozen
 * pages before it answers.
 *
 * Build:  cc -O2 -Wall -Wextra -static -pthread -o build/native/sb-agent providers/local/sbagent.c
 *
 * Interface: argv is ["sb-agent"], the environment is empty and no argument is read.
 *   fd 0-2  /dev/null, ignored.
 *   fd 3    the listening unix SOCK_STREAM socket: connections are accepted forever, each
 *           served by its own detached thread.
 *   fd 4    optional: the first connection, whose first request (a ping) is usually queued.
 *   fd 5    optional: PID 1's "go" pipe. The first connection's first request is read, then
 *           one byte is read from fd 5: 'g' -> chdir("/root") (or "/") and answer; anything
 *           else (EOF) -> exit(1). The filesystem is not touched before the go.
 *           Without fd 5 the agent enters /root at once (a restarted agent).
 *   fd 6    configuration, read to EOF first: "host_pid starttime seccomp_len\n" followed by
 *           seccomp_len bytes of classic BPF (struct sock_filter[]); 0 means no filter.
 *           Malformed -> exit(2).
 * Hardening: PR_SET_DUMPABLE 0 before anything, then (after reading fd 6) no_new_privs and
 * the seccomp filter; a failure exits with status 3.
 *
 * The wire protocol must stay byte-compatible with agent.py (see its docstring): one JSON
 * header line, then header["len"] raw bytes, in both directions. The differential test
 * tests/test_local_agent_native.py runs the same requests against both agents and compares
 * the answers; change both together.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <limits.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The zygote (zygote.py AGENT_ABI_MARK) execs this program only if its file carries this
 * string: change the number with the descriptor interface or the wire protocol, so that a
 * binary built from an older source falls back to the Python agent instead of misbehaving. */
__attribute__((used)) static const char ABI_MARK[] = "sb-agent abi 1";

#define LISTEN_FD 3
#define FIRST_FD 4
#define GO_FD 5
#define CONFIG_FD 6

#define CHUNK (1 << 16)                      /* agent.CHUNK */
#define EXIT_GRACE_S 0.05                    /* agent.EXIT_GRACE_S */
#define MAX_LINE ((size_t)16 << 20)          /* longest request header line */
#define MAX_DEPTH 900                        /* JSON nesting (Python: ~1000 frames) */
#define MAX_CONFIG (64 + 65535 * 8)          /* fd 6: the header and the longest filter */
#define DEFAULT_CWD "/root"

/* agent.BASE_ENV, in its order. */
static const char *const BASE_ENV[][2] = {
    {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    {"HOME", "/root"},
    {"LANG", "C.UTF-8"},
    {"USER", "root"},
    {"LOGNAME", "root"},
};
#define BASE_ENV_N (sizeof BASE_ENV / sizeof BASE_ENV[0])

/* Set once in main, read-only afterwards. */
static long long g_host_pid, g_starttime;

/* ------------------------------------------------------------------ small helpers */

static void die(int status) { _exit(status); }

static double monotonic(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        die(1);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A growable byte buffer. The reserve functions return false when memory runs out. */
struct buf {
    char *data;
    size_t len, cap;
};

static bool buf_reserve(struct buf *b, size_t extra) {
    if (b->cap - b->len >= extra)
        return true;
    if (extra > SIZE_MAX / 2 - b->len)
        return false;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (data == NULL)
        return false;
    b->data = data;
    b->cap = cap;
    return true;
}

/* For small, bounded text (headers, messages): running out of memory there is fatal. */
static void buf_add(struct buf *b, const void *p, size_t n) {
    if (!buf_reserve(b, n))
        die(1);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_printf(struct buf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        die(1);
    if ((size_t)n >= sizeof tmp) /* callers only format numbers and short names */
        n = sizeof tmp - 1;
    buf_add(b, tmp, (size_t)n);
}

static void buf_free(struct buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static void close_fd(int fd) {
    if (fd >= 0)
        close(fd); /* EINTR on Linux still closes; nothing else to do with an error here */
}

static const char *errtext(int err, char *space, size_t size) {
    return strerror_r(err, space, size); /* the GNU variant: may return a static string */
}

/* ------------------------------------------------------------------ JSON values */

enum jtype { J_NULL, J_BOOL, J_INT, J_FLOAT, J_STR, J_ARR, J_OBJ };

struct jstr {
    char *s;   /* UTF-8, NUL-terminated for convenience; may contain NULs (see nul) */
    size_t len;
    bool nul;  /* contains U+0000: Python's "embedded null byte" when used as a path/arg */
    bool bad;  /* contains a lone surrogate Python cannot encode to bytes */
};

struct jval {
    enum jtype type;
    bool b;
    long long i;
    double f;
    char *bigint; /* J_INT beyond 64 bits: its decimal digits (f holds an approximation) */
    struct jstr str;
    size_t n;
    struct jval *items; /* array items, object values */
    struct jstr *keys;  /* object keys */
};

static void jfree_inner(struct jval *v) {
    free(v->bigint);
    free(v->str.s);
    for (size_t k = 0; k < v->n; k++) {
        jfree_inner(&v->items[k]);
        if (v->keys)
            free(v->keys[k].s);
    }
    free(v->items);
    free(v->keys);
}

static void jfree(struct jval *v) {
    if (v) {
        jfree_inner(v);
        free(v);
    }
}

/* The value of key in object o (the last one on duplicates, as Python's dict), or NULL. */
static const struct jval *jget(const struct jval *o, const char *key) {
    size_t len = strlen(key);
    for (size_t k = o->n; k-- > 0;)
        if (o->keys[k].len == len && memcmp(o->keys[k].s, key, len) == 0)
            return &o->items[k];
    return NULL;
}

static bool jstr_is(const struct jval *v, const char *s) {
    return v && v->type == J_STR && v->str.len == strlen(s) && memcmp(v->str.s, s, v->str.len) == 0;
}

/* Python's truth value. */
static bool jtruthy(const struct jval *v) {
    switch (v->type) {
    case J_NULL: return false;
    case J_BOOL: return v->b;
    case J_INT: return v->bigint != NULL || v->i != 0;
    case J_FLOAT: return v->f != 0.0; /* nan is true, as in Python */
    case J_STR: return v->str.len > 0;
    default: return v->n > 0;
    }
}

/* Python's type name, for error messages. */
static const char *jtypename(const struct jval *v) {
    static const char *const names[] = {"NoneType", "bool", "int", "float", "str", "list", "dict"};
    return v ? names[v->type] : "NoneType";
}

/* ------------------------------------------------------------------ JSON parser */

struct parser {
    const unsigned char *p, *end;
    int depth;
    const char *error; /* static text */
    size_t error_at;
    const unsigned char *start;
};

static bool perr(struct parser *ps, const char *msg) {
    if (!ps->error) {
        ps->error = msg;
        ps->error_at = (size_t)(ps->p - ps->start);
    }
    return false;
}

static void skip_ws(struct parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF), as Python decodes. */
static bool valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; cp = c & 0x0F; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (n - i <= need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

static void put_utf8(struct buf *b, uint32_t cp) {
    unsigned char t[4];
    size_t n;
    if (cp < 0x80) { t[0] = (unsigned char)cp; n = 1; }
    else if (cp < 0x800) { t[0] = 0xC0 | (cp >> 6); t[1] = 0x80 | (cp & 0x3F); n = 2; }
    else if (cp < 0x10000) {
        t[0] = 0xE0 | (cp >> 12); t[1] = 0x80 | ((cp >> 6) & 0x3F); t[2] = 0x80 | (cp & 0x3F); n = 3;
    } else {
        t[0] = 0xF0 | (cp >> 18); t[1] = 0x80 | ((cp >> 12) & 0x3F);
        t[2] = 0x80 | ((cp >> 6) & 0x3F); t[3] = 0x80 | (cp & 0x3F); n = 4;
    }
    buf_add(b, t, n);
}

static bool hex4(struct parser *ps, uint32_t *out) {
    if (ps->end - ps->p < 4)
        return perr(ps, "Invalid \\uXXXX escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = ps->p[k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return perr(ps, "Invalid \\uXXXX escape");
    }
    ps->p += 4;
    *out = v;
    return true;
}

/* After the opening quote. */
static bool parse_string(struct parser *ps, struct jstr *out) {
    struct buf b = {0};
    bool nul = false, bad = false;
    for (;;) {
        if (ps->p >= ps->end) {
            buf_free(&b);
            return perr(ps, "Unterminated string starting at");
        }
        unsigned char c = *ps->p++;
        if (c == '"')
            break;
        if (c < 0x20) {
            buf_free(&b);
            return perr(ps, "Invalid control character at");
        }
        if (c != '\\') {
            buf_add(&b, &c, 1);
            continue;
        }
        if (ps->p >= ps->end) {
            buf_free(&b);
            return perr(ps, "Unterminated string starting at");
        }
        c = *ps->p++;
        char e;
        switch (c) {
        case '"': e = '"'; break;
        case '\\': e = '\\'; break;
        case '/': e = '/'; break;
        case 'b': e = '\b'; break;
        case 'f': e = '\f'; break;
        case 'n': e = '\n'; break;
        case 'r': e = '\r'; break;
        case 't': e = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (!hex4(ps, &cp)) {
                buf_free(&b);
                return false;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF && ps->end - ps->p >= 6 && ps->p[0] == '\\' &&
                ps->p[1] == 'u') {
                const unsigned char *save = ps->p;
                uint32_t lo;
                ps->p += 2;
                if (!hex4(ps, &lo)) {
                    buf_free(&b);
                    return false;
                }
                if (lo >= 0xDC00 && lo <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else
                    ps->p = save; /* a lone high surrogate; the next escape stands alone */
            }
            if (cp == 0)
                nul = true;
            if (cp >= 0xDC80 && cp <= 0xDCFF) {
                /* Python's surrogateescape: the lone surrogate stands for one raw byte */
                unsigned char raw = (unsigned char)(cp & 0xFF);
                buf_add(&b, &raw, 1);
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                bad = true; /* kept as its 3-byte form (invalid UTF-8), for repr only */
                put_utf8(&b, cp);
            } else {
                put_utf8(&b, cp);
            }
            continue;
        }
        default:
            buf_free(&b);
            return perr(ps, "Invalid \\escape");
        }
        buf_add(&b, &e, 1);
    }
    buf_add(&b, "", 1);
    out->s = b.data;
    out->len = b.len - 1;
    out->nul = nul;
    out->bad = bad;
    return true;
}

static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static bool lit(struct parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, word, n) == 0) {
        ps->p += n;
        return true;
    }
    return false;
}

static bool parse_value(struct parser *ps, struct jval *v);

static bool parse_number(struct parser *ps, struct jval *v) {
    if (lit(ps, "-Infinity")) {
        v->type = J_FLOAT;
        v->f = -__builtin_inf();
        return true;
    }
    const unsigned char *s = ps->p, *q = ps->p;
    if (q < ps->end && *q == '-')
        q++;
    if (q >= ps->end || !is_digit(*q))
        return perr(ps, "Expecting value");
    if (*q == '0')
        q++;
    else
        while (q < ps->end && is_digit(*q))
            q++;
    bool is_float = false;
    if (q + 1 < ps->end && *q == '.' && is_digit(q[1])) {
        is_float = true;
        q++;
        while (q < ps->end && is_digit(*q))
            q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        const unsigned char *r = q + 1;
        if (r < ps->end && (*r == '+' || *r == '-'))
            r++;
        if (r < ps->end && is_digit(*r)) {
            is_float = true;
            while (r < ps->end && is_digit(*r))
                r++;
            q = r;
        }
    }
    size_t n = (size_t)(q - s);
    char tmp[64];
    char *text = n < sizeof tmp ? tmp : malloc(n + 1);
    if (text == NULL)
        die(1);
    memcpy(text, s, n);
    text[n] = 0;
    ps->p = q;
    if (is_float) {
        v->type = J_FLOAT;
        v->f = strtod(text, NULL);
    } else {
        v->type = J_INT;
        errno = 0;
        v->i = strtoll(text, NULL, 10);
        if (errno == ERANGE) {
            v->f = strtod(text, NULL);
            v->bigint = strdup(text);
            if (v->bigint == NULL)
                die(1);
        } else {
            v->f = (double)v->i;
        }
    }
    if (text != tmp)
        free(text);
    return true;
}

static bool parse_array(struct parser *ps, struct jval *v) {
    v->type = J_ARR;
    size_t cap = 0;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return true;
    }
    for (;;) {
        if (v->n == cap) {
            cap = cap ? cap * 2 : 4;
            struct jval *items = realloc(v->items, cap * sizeof *items);
            if (items == NULL)
                die(1);
            v->items = items;
        }
        memset(&v->items[v->n], 0, sizeof v->items[0]);
        v->n++;
        skip_ws(ps);
        if (!parse_value(ps, &v->items[v->n - 1]))
            return false;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return true;
        }
        return perr(ps, "Expecting ',' delimiter");
    }
}

static bool parse_object(struct parser *ps, struct jval *v) {
    v->type = J_OBJ;
    size_t cap = 0;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return true;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"')
            return perr(ps, "Expecting property name enclosed in double quotes");
        ps->p++;
        if (v->n == cap) {
            cap = cap ? cap * 2 : 4;
            struct jval *items = realloc(v->items, cap * sizeof *items);
            struct jstr *keys = items ? realloc(v->keys, cap * sizeof *keys) : NULL;
            if (items == NULL || keys == NULL)
                die(1);
            v->items = items;
            v->keys = keys;
        }
        memset(&v->items[v->n], 0, sizeof v->items[0]);
        memset(&v->keys[v->n], 0, sizeof v->keys[0]);
        v->n++;
        if (!parse_string(ps, &v->keys[v->n - 1]))
            return false;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            return perr(ps, "Expecting ':' delimiter");
        ps->p++;
        skip_ws(ps);
        if (!parse_value(ps, &v->items[v->n - 1]))
            return false;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return true;
        }
        return perr(ps, "Expecting ',' delimiter");
    }
}

static bool parse_value(struct parser *ps, struct jval *v) {
    if (ps->p >= ps->end)
        return perr(ps, "Expecting value");
    if (++ps->depth > MAX_DEPTH)
        return perr(ps, "maximum recursion depth exceeded at");
    bool ok;
    switch (*ps->p) {
    case '{': ps->p++; ok = parse_object(ps, v); break;
    case '[': ps->p++; ok = parse_array(ps, v); break;
    case '"': ps->p++; v->type = J_STR; ok = parse_string(ps, &v->str); break;
    default:
        if (lit(ps, "null")) { v->type = J_NULL; ok = true; }
        else if (lit(ps, "true")) { v->type = J_BOOL; v->b = true; ok = true; }
        else if (lit(ps, "false")) { v->type = J_BOOL; v->b = false; ok = true; }
        else if (lit(ps, "NaN")) { v->type = J_FLOAT; v->f = __builtin_nan(""); ok = true; }
        else if (lit(ps, "Infinity")) { v->type = J_FLOAT; v->f = __builtin_inf(); ok = true; }
        else ok = parse_number(ps, v);
    }
    ps->depth--;
    return ok;
}

/* Parse one header line (json.loads); NULL with *error set on failure. */
static struct jval *json_parse(const char *text, size_t len, char *error, size_t errlen) {
    struct parser ps = {.p = (const unsigned char *)text, .end = (const unsigned char *)text + len,
                        .start = (const unsigned char *)text};
    if (!valid_utf8(ps.p, len)) {
        snprintf(error, errlen, "UnicodeDecodeError: 'utf-8' codec can't decode the header");
        return NULL;
    }
    struct jval *v = calloc(1, sizeof *v);
    if (v == NULL)
        die(1);
    skip_ws(&ps);
    if (parse_value(&ps, v)) {
        skip_ws(&ps);
        if (ps.p == ps.end)
            return v;
        perr(&ps, "Extra data");
    }
    snprintf(error, errlen, "JSONDecodeError: %s: line 1 column %zu (char %zu)", ps.error,
             ps.error_at + 1, ps.error_at);
    jfree(v);
    return NULL;
}

/* ------------------------------------------------------------------ JSON output */

/* A JSON string as json.dumps writes it (ensure_ascii): bytes that are not valid UTF-8 are
 * written as the surrogates Python's surrogateescape would have made of them. */
static void json_string(struct buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        uint32_t cp = c;
        size_t used = 1;
        if (c >= 0x80) {
            size_t need = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
            if (c >= 0xC2 && c <= 0xF4 && n - i > need && valid_utf8(u + i, need + 1)) {
                cp = c & (0x3F >> need);
                for (size_t k = 1; k <= need; k++)
                    cp = (cp << 6) | (u[i + k] & 0x3F);
                used = need + 1;
            } else {
                cp = 0xDC00 | c;
            }
        }
        i += used;
        switch (cp) {
        case '"': buf_str(b, "\\\""); continue;
        case '\\': buf_str(b, "\\\\"); continue;
        case '\n': buf_str(b, "\\n"); continue;
        case '\r': buf_str(b, "\\r"); continue;
        case '\t': buf_str(b, "\\t"); continue;
        case '\b': buf_str(b, "\\b"); continue;
        case '\f': buf_str(b, "\\f"); continue;
        }
        if (cp >= 0x20 && cp < 0x7F) {
            char ch = (char)cp;
            buf_add(b, &ch, 1);
        } else if (cp < 0x10000) {
            buf_printf(b, "\\u%04x", cp);
        } else {
            cp -= 0x10000;
            buf_printf(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
        }
    }
    buf_add(b, "\"", 1);
}

/* ------------------------------------------------------------------ Python repr */

/* Python's str.isprintable() for a non-ASCII code point: false for the separators (Z*) other
 * than space and the "other" categories (C*); the common ranges of those, not every
 * unassigned one. */
static bool py_printable(uint32_t cp) {
    static const uint32_t ranges[][2] = {
        {0x80, 0xA0}, {0xAD, 0xAD}, {0x600, 0x605}, {0x61C, 0x61C}, {0x6DD, 0x6DD},
        {0x70F, 0x70F}, {0x890, 0x891}, {0x8E2, 0x8E2}, {0x1680, 0x1680}, {0x180E, 0x180E},
        {0x2000, 0x200F}, {0x2028, 0x202F}, {0x205F, 0x206F}, {0x3000, 0x3000},
        {0xD800, 0xF8FF}, {0xFEFF, 0xFEFF}, {0xFFF0, 0xFFFB}, {0xFFFE, 0xFFFF},
        {0x110BD, 0x110BD}, {0x110CD, 0x110CD}, {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3},
        {0x1D173, 0x1D17A}, {0xE0000, 0xE00FF}, {0xE01F0, 0x10FFFF},
    };
    for (size_t k = 0; k < sizeof ranges / sizeof ranges[0]; k++)
        if (cp >= ranges[k][0] && cp <= ranges[k][1])
            return false;
    return true;
}

static void repr_string(struct buf *b, const struct jstr *s) {
    bool single = memchr(s->s, '\'', s->len) != NULL, dbl = memchr(s->s, '"', s->len) != NULL;
    char quote = single && !dbl ? '"' : '\'';
    buf_add(b, &quote, 1);
    const unsigned char *u = (const unsigned char *)s->s;
    for (size_t i = 0; i < s->len;) {
        unsigned char c = u[i];
        if (c < 0x80) {
            i++;
            if (c == (unsigned char)quote || c == '\\') {
                buf_add(b, "\\", 1);
                buf_add(b, &c, 1);
            } else if (c == '\t') buf_str(b, "\\t");
            else if (c == '\n') buf_str(b, "\\n");
            else if (c == '\r') buf_str(b, "\\r");
            else if (c < 0x20 || c == 0x7F) buf_printf(b, "\\x%02x", c);
            else buf_add(b, &c, 1);
            continue;
        }
        size_t need = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
        if (c >= 0xC2 && c <= 0xF4 && s->len - i > need && valid_utf8(u + i, need + 1)) {
            uint32_t cp = c & (0x3F >> need);
            for (size_t k = 1; k <= need; k++)
                cp = (cp << 6) | (u[i + k] & 0x3F);
            if (cp <= 0xFF && !py_printable(cp))
                buf_printf(b, "\\x%02x", cp);
            else if (cp <= 0xFFFF && !py_printable(cp))
                buf_printf(b, "\\u%04x", cp);
            else if (!py_printable(cp))
                buf_printf(b, "\\U%08x", cp);
            else
                buf_add(b, u + i, need + 1);
            i += need + 1;
        } else if (c == 0xED && s->len - i > 2 && (u[i + 1] & 0xE0) == 0xA0) {
            uint32_t cp = 0xD000 | ((uint32_t)(u[i + 1] & 0x3F) << 6) | (u[i + 2] & 0x3F);
            buf_printf(b, "\\u%04x", cp); /* a lone surrogate */
            i += 3;
        } else {
            buf_printf(b, "\\udc%02x", c); /* a surrogateescape'd byte */
            i++;
        }
    }
    buf_add(b, &quote, 1);
}

/* repr(float): the shortest digits that read back, in Python's layout. */
static void repr_float(struct buf *b, double f) {
    if (f != f) { buf_str(b, "nan"); return; }
    if (f == __builtin_inf()) { buf_str(b, "inf"); return; }
    if (f == -__builtin_inf()) { buf_str(b, "-inf"); return; }
    char text[64];
    for (int prec = 0; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*e", prec, f);
        if (strtod(text, NULL) == f)
            break;
    }
    /* text: [-]d[.ddd]e(+|-)XX */
    char digits[32];
    size_t nd = 0;
    const char *p = text;
    bool neg = *p == '-';
    if (neg)
        p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (neg)
        buf_add(b, "-", 1);
    if (exp >= -4 && exp < 16) { /* Python: fixed notation for 1e-4 <= |f| < 1e16 */
        if (exp < 0) {
            buf_str(b, "0.");
            for (int k = -1; k > exp; k--)
                buf_add(b, "0", 1);
            buf_add(b, digits, nd);
        } else {
            for (int k = 0; k <= exp; k++)
                buf_add(b, (size_t)k < nd ? &digits[k] : "0", 1);
            buf_add(b, ".", 1);
            if ((size_t)exp + 1 < nd)
                buf_add(b, digits + exp + 1, nd - (size_t)exp - 1);
            else
                buf_add(b, "0", 1);
        }
    } else {
        buf_add(b, digits, 1);
        if (nd > 1) {
            buf_add(b, ".", 1);
            buf_add(b, digits + 1, nd - 1);
        }
        buf_printf(b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
}

static void repr_value(struct buf *b, const struct jval *v) {
    if (v == NULL) {
        buf_str(b, "None");
        return;
    }
    switch (v->type) {
    case J_NULL: buf_str(b, "None"); break;
    case J_BOOL: buf_str(b, v->b ? "True" : "False"); break;
    case J_INT:
        if (v->bigint)
            buf_str(b, v->bigint);
        else
            buf_printf(b, "%lld", v->i);
        break;
    case J_FLOAT: repr_float(b, v->f); break;
    case J_STR: repr_string(b, &v->str); break;
    case J_ARR:
        buf_add(b, "[", 1);
        for (size_t k = 0; k < v->n; k++) {
            if (k)
                buf_str(b, ", ");
            repr_value(b, &v->items[k]);
        }
        buf_add(b, "]", 1);
        break;
    case J_OBJ:
        buf_add(b, "{", 1);
        for (size_t k = 0; k < v->n; k++) { /* a dict keeps the first position of a key */
            bool seen = false;
            for (size_t e = 0; e < k && !seen; e++)
                seen = v->keys[e].len == v->keys[k].len &&
                       memcmp(v->keys[e].s, v->keys[k].s, v->keys[k].len) == 0;
            if (seen)
                continue;
            if (b->data[b->len - 1] != '{')
                buf_str(b, ", ");
            repr_string(b, &v->keys[k]);
            buf_str(b, ": ");
            const struct jval *last = &v->items[k];
            for (size_t e = k + 1; e < v->n; e++)
                if (v->keys[e].len == v->keys[k].len &&
                    memcmp(v->keys[e].s, v->keys[k].s, v->keys[k].len) == 0)
                    last = &v->items[e];
            repr_value(b, last);
        }
        buf_add(b, "}", 1);
        break;
    }
}

/* ------------------------------------------------------------------ replies */

/* One answer: the header (JSON object text without its closing brace and "len") and up to
 * two body parts, sent as header + part[0] + part[1]. */
struct reply {
    struct buf head;
    struct buf part[2];
};

static void reply_open(struct reply *r) {
    memset(r, 0, sizeof *r);
    buf_add(&r->head, "{", 1);
}

static void reply_key(struct reply *r, const char *key) {
    if (r->head.len > 1)
        buf_add(&r->head, ",", 1);
    json_string(&r->head, key, strlen(key));
    buf_add(&r->head, ":", 1);
}

static void reply_int(struct reply *r, const char *key, long long value) {
    reply_key(r, key);
    buf_printf(&r->head, "%lld", value);
}

static void reply_true(struct reply *r, const char *key) {
    reply_key(r, key);
    buf_str(&r->head, "true");
}

/* {"error": message, "errno": err}: an OSError (strerror) or another failure (errno 0). */
static void reply_error(struct reply *r, const char *message, size_t len, int err) {
    buf_free(&r->head);
    buf_free(&r->part[0]);
    buf_free(&r->part[1]);
    reply_open(r);
    reply_key(r, "error");
    json_string(&r->head, message, len);
    reply_int(r, "errno", err);
}

static void reply_oserror(struct reply *r, int err) {
    char space[128];
    const char *text = errtext(err, space, sizeof space);
    reply_error(r, text, strlen(text), err);
}

static void reply_failure(struct reply *r, const char *fmt, ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    reply_error(r, text, n < 0 ? 0 : (size_t)n >= sizeof text ? sizeof text - 1 : (size_t)n, 0);
}

static void reply_free(struct reply *r) {
    buf_free(&r->head);
    buf_free(&r->part[0]);
    buf_free(&r->part[1]);
}

/* Send everything; false when the connection is gone. */
static bool send_all(int fd, struct iovec *iov, int n) {
    while (n > 0) {
        if (iov->iov_len == 0) {
            iov++;
            n--;
            continue;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        while (n > 0 && (size_t)sent >= iov->iov_len) {
            sent -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + sent;
            iov->iov_len -= (size_t)sent;
        }
    }
    return true;
}

static bool reply_send(int fd, struct reply *r) {
    reply_int(r, "len", (long long)(r->part[0].len + r->part[1].len));
    buf_str(&r->head, "}\n");
    struct iovec iov[3] = {
        {r->head.data, r->head.len},
        {r->part[0].data, r->part[0].len},
        {r->part[1].data, r->part[1].len},
    };
    return send_all(fd, iov, 3);
}

/* ------------------------------------------------------------------ requests: helpers */

/* A string argument as Python would pass it to the OS; false with the reply set if it
 * cannot be (not a string, embedded NUL, unencodable surrogate). */
static bool os_string(struct reply *r, const struct jval *v) {
    if (v->type != J_STR) {
        reply_failure(r, "TypeError: expected str, bytes or os.PathLike object, not %s",
                      jtypename(v));
        return false;
    }
    if (v->str.nul) {
        reply_failure(r, "ValueError: embedded null byte");
        return false;
    }
    if (v->str.bad) {
        reply_failure(r, "UnicodeEncodeError: 'utf-8' codec can't encode a surrogate: "
                         "surrogates not allowed");
        return false;
    }
    return true;
}

/* A number compared with time.monotonic() (bool counts, as in Python). */
static bool real_number(const struct jval *v, double *out) {
    if (v->type == J_INT || v->type == J_FLOAT) {
        *out = v->f;
        return true;
    }
    if (v->type == J_BOOL) {
        *out = v->b ? 1.0 : 0.0;
        return true;
    }
    return false;
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* os.path.split's head. */
static char *path_head(const char *path) {
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) + 1 : 0;
    char *head = strndup(path, n);
    if (head == NULL)
        die(1);
    bool all_slashes = true;
    for (size_t k = 0; k < n; k++)
        all_slashes = all_slashes && head[k] == '/';
    if (n && !all_slashes)
        while (n > 0 && head[n - 1] == '/')
            head[--n] = 0;
    return head;
}

static const char *path_tail(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* os.makedirs(name, exist_ok=True): 0, or an errno. */
static int makedirs(const char *name) {
    char *head = path_head(name);
    const char *tail = path_tail(name);
    char *head2 = NULL;
    if (*tail == 0) { /* a trailing slash: split once more */
        head2 = path_head(head);
        tail = path_tail(head);
        char *swap = head;
        head = head2;
        head2 = swap; /* keeps the string tail points into alive */
    }
    struct stat st;
    if (*head && *tail && stat(head, &st) != 0) {
        int err = makedirs(head);
        if (err && err != EEXIST) {
            free(head);
            free(head2);
            return err;
        }
        if (strcmp(tail, ".") == 0) {
            free(head);
            free(head2);
            return 0;
        }
    }
    free(head);
    free(head2);
    if (mkdir(name, 0777) != 0) {
        int err = errno;
        if (!is_dir(name))
            return err;
    }
    return 0;
}

/* Read a whole descriptor into b: 0 or an errno (ENOMEM when b cannot grow). */
static int read_all(int fd, struct buf *b) {
    for (;;) {
        if (!buf_reserve(b, CHUNK))
            return ENOMEM;
        ssize_t n = read(fd, b->data + b->len, CHUNK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0)
            return 0;
        b->len += (size_t)n;
    }
}

/* ------------------------------------------------------------------ write and read */

static void op_write(struct reply *r, const struct jval *h, const char *body, size_t len) {
    const struct jval *path = jget(h, "path");
    if (path == NULL) {
        reply_failure(r, "KeyError: 'path'");
        return;
    }
    if (path->type != J_STR) {
        reply_failure(r, "TypeError: expected str, bytes or os.PathLike object, not %s",
                      jtypename(path));
        return;
    }
    if (!os_string(r, path))
        return;
    char *dir = path_head(path->str.s);
    int err = makedirs(*dir ? dir : "/");
    free(dir);
    if (err) {
        reply_oserror(r, err);
        return;
    }
    int fd = open(path->str.s, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        reply_oserror(r, errno);
        return;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, body + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            close_fd(fd);
            reply_oserror(r, err);
            return;
        }
        done += (size_t)n;
    }
    if (close(fd) != 0 && errno != EINTR) {
        reply_oserror(r, errno);
        return;
    }
    reply_true(r, "ok");
}

static void op_read(struct reply *r, const struct jval *h) {
    const struct jval *path = jget(h, "path");
    if (path == NULL) {
        reply_failure(r, "KeyError: 'path'");
        return;
    }
    if (!os_string(r, path))
        return;
    int fd = open(path->str.s, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        reply_oserror(r, errno);
        return;
    }
    struct stat st;
    int err = fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
    if (!err)
        err = read_all(fd, &r->part[0]);
    close_fd(fd);
    if (err == ENOMEM)
        reply_failure(r, "MemoryError");
    else if (err)
        reply_oserror(r, err);
    else
        reply_true(r, "ok");
}

/* ------------------------------------------------------------------ exec */

/* Read and drop what background descendants still write, then close the pipes. */
struct drain {
    int fds[2];
    int n;
};

static void *drain_thread(void *arg) {
    struct drain *d = arg;
    char *scratch = malloc(CHUNK);
    while (scratch && d->n > 0) {
        struct pollfd p[2];
        for (int k = 0; k < d->n; k++)
            p[k] = (struct pollfd){.fd = d->fds[k], .events = POLLIN};
        if (poll(p, (nfds_t)d->n, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int k = d->n; k-- > 0;) {
            if (!p[k].revents)
                continue;
            ssize_t got = read(d->fds[k], scratch, CHUNK);
            if (got < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (got <= 0) {
                close_fd(d->fds[k]);
                d->fds[k] = d->fds[--d->n];
            }
        }
    }
    for (int k = 0; k < d->n; k++)
        close_fd(d->fds[k]);
    free(scratch);
    free(d);
    return NULL;
}

static bool start_thread(void *(*fn)(void *), void *arg) {
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return false;
    bool ok = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
              pthread_attr_setstacksize(&attr, 1 << 20) == 0 &&
              pthread_create(&(pthread_t){0}, &attr, fn, arg) == 0;
    pthread_attr_destroy(&attr);
    return ok;
}

static void ts_from(double s, struct timespec *ts) {
    if (s < 0)
        s = 0;
    if (s > 1e9)
        s = 1e9;
    ts->tv_sec = (time_t)s;
    ts->tv_nsec = (long)((s - (double)ts->tv_sec) * 1e9);
}

/* agent._collect: stdout and stderr until both close and the process has exited (output
 * still open EXIT_GRACE_S after the exit is left to a drain thread), or the deadline. */
static int collect(pid_t pid, int fds[2], double deadline, struct buf out[2], int *code,
                   bool *timed_out) {
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        return errno;
    bool open[2] = {true, true}, exited = false, nomem = false;
    double exited_at = 0;
    *timed_out = false;
    while (open[0] || open[1] || !exited) {
        double now = monotonic();
        if (now >= deadline) {
            *timed_out = true;
            break;
        }
        double wait = deadline - now;
        if (exited) {
            double left = exited_at + EXIT_GRACE_S - now;
            if (left < wait)
                wait = left;
            if (wait <= 0)
                break;
        }
        struct pollfd p[3];
        int which[3];
        nfds_t n = 0;
        for (int k = 0; k < 2; k++)
            if (open[k]) {
                p[n] = (struct pollfd){.fd = fds[k], .events = POLLIN};
                which[n++] = k;
            }
        if (!exited) {
            p[n] = (struct pollfd){.fd = pidfd, .events = POLLIN};
            which[n++] = 2;
        }
        struct timespec ts;
        ts_from(wait, &ts);
        if (ppoll(p, n, &ts, NULL) < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            close_fd(pidfd);
            return err;
        }
        for (nfds_t k = 0; k < n; k++) {
            if (!p[k].revents)
                continue;
            int w = which[k];
            if (w == 2) {
                exited = true;
                exited_at = monotonic();
                continue;
            }
            if (!buf_reserve(&out[w], CHUNK)) {
                nomem = true; /* stop as on a timeout: kill the command */
                break;
            }
            ssize_t got = read(fds[w], out[w].data + out[w].len, CHUNK);
            if (got < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (got > 0) {
                out[w].len += (size_t)got;
            } else {
                close_fd(fds[w]);
                fds[w] = -1;
                open[w] = false;
            }
        }
        if (nomem)
            break;
    }
    if (*timed_out || nomem)
        if (killpg(pid, SIGKILL) != 0 && errno != ESRCH) {
            /* nothing more to try: waitpid below still reaps it once it exits */
        }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            break;
    }
    close_fd(pidfd);
    struct drain *d = NULL;
    for (int k = 0; k < 2; k++) {
        if (!open[k])
            continue;
        if (d == NULL && (d = calloc(1, sizeof *d)) == NULL) {
            close_fd(fds[k]);
            continue;
        }
        d->fds[d->n++] = fds[k];
        fds[k] = -1;
    }
    if (d && !start_thread(drain_thread, d)) { /* no thread: close them, come what may */
        for (int k = 0; k < d->n; k++)
            close_fd(d->fds[k]);
        free(d);
    }
    /* killed by signal N -> 128+N, as sh reports it */
    *code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    return nomem ? ENOMEM : 0;
}

/* agent._which: 0 with *found (malloc'd), or ENOENT. */
static int which(const struct jstr *program, const char *path_var, size_t path_len,
                 char **found) {
    if (memchr(program->s, '/', program->len)) {
        *found = strdup(program->s);
        if (*found == NULL)
            die(1);
        return 0;
    }
    char *first = NULL;
    const char *p = path_var, *end = path_var + path_len;
    for (;;) {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        const char *stop = colon ? colon : end;
        struct buf cand = {0};
        if (stop == p)
            buf_add(&cand, ".", 1);
        else
            buf_add(&cand, p, (size_t)(stop - p));
        buf_add(&cand, "/", 1);
        buf_add(&cand, program->s, program->len);
        buf_add(&cand, "", 1);
        struct stat st;
        /* a name with a NUL is no file (os.path.isfile answers False) */
        bool file = strlen(cand.data) == cand.len - 1 && !program->nul &&
                    stat(cand.data, &st) == 0 && S_ISREG(st.st_mode);
        if (file && access(cand.data, X_OK) == 0) {
            free(first);
            *found = cand.data;
            return 0;
        }
        if (file && first == NULL)
            first = cand.data;
        else
            buf_free(&cand);
        if (colon == NULL)
            break;
        p = colon + 1;
    }
    if (first == NULL)
        return ENOENT;
    *found = first; /* exists but is not executable: posix_spawn reports EACCES */
    return 0;
}

struct env_entry {
    const char *key;
    size_t key_len;
    const struct jval *value; /* NULL: the base value */
    const char *base;
};

static void op_exec(struct reply *r, const struct jval *h) {
    const struct jval *dl = jget(h, "deadline");
    double deadline;
    if (dl == NULL) {
        reply_failure(r, "KeyError: 'deadline'");
        return;
    }
    if (dl->type == J_STR) { /* float("1.5") works in Python */
        char *end;
        deadline = strtod(dl->str.s, &end);
        while (*end == ' ' || *end == '\t' || *end == '\n')
            end++;
        if (end == dl->str.s || *end || dl->str.nul) {
            reply_failure(r, "ValueError: could not convert string to float");
            return;
        }
    } else if (!real_number(dl, &deadline)) {
        reply_failure(r, "TypeError: float() argument must be a string or a real number, not '%s'",
                      jtypename(dl));
        return;
    }
    if (monotonic() >= deadline) {
        reply_true(r, "timeout");
        reply_key(r, "started");
        buf_str(&r->head, "false");
        return;
    }
    if (deadline != deadline) { /* agent.py fails in poll() on it (after starting the command) */
        reply_failure(r, "ValueError: Invalid value NaN (not a number)");
        return;
    }

    /* env = dict(BASE_ENV); env.update(header.get("env") or {}) */
    const struct jval *extra = jget(h, "env");
    if (extra && jtruthy(extra) && extra->type != J_OBJ) {
        reply_failure(r, "TypeError: '%s' object is not a mapping", jtypename(extra));
        return;
    }
    size_t n_extra = extra && extra->type == J_OBJ ? extra->n : 0;
    struct env_entry *env = calloc(BASE_ENV_N + n_extra, sizeof *env);
    if (env == NULL)
        die(1);
    size_t n_env = 0;
    for (size_t k = 0; k < BASE_ENV_N; k++)
        env[n_env++] = (struct env_entry){BASE_ENV[k][0], strlen(BASE_ENV[k][0]), NULL,
                                          BASE_ENV[k][1]};
    for (size_t k = 0; k < n_extra; k++) {
        const struct jstr *key = &extra->keys[k];
        size_t e = 0;
        while (e < n_env && !(env[e].key_len == key->len && memcmp(env[e].key, key->s, key->len) == 0))
            e++;
        if (e == n_env)
            env[n_env++] = (struct env_entry){key->s, key->len, NULL, NULL};
        env[e].value = &extra->items[k];
    }

    const struct jval *argv = jget(h, "argv");
    char *program = NULL;
    char **cargv = NULL, **cenv = NULL;
    int fds[2][2] = {{-1, -1}, {-1, -1}};
    if (argv == NULL) {
        reply_failure(r, "KeyError: 'argv'");
        goto done;
    }
    if (argv->type != J_ARR) {
        reply_failure(r, "TypeError: argv must be a tuple or a list");
        goto done;
    }
    if (argv->n == 0) {
        reply_failure(r, "IndexError: list index out of range");
        goto done;
    }
    if (argv->items[0].type != J_STR) {
        reply_failure(r, "TypeError: argument of type '%s' is not iterable",
                      jtypename(&argv->items[0]));
        goto done;
    }
    /* the PATH the command will have */
    const char *path_var = "";
    size_t path_len = 0;
    for (size_t e = 0; e < n_env; e++) {
        if (env[e].key_len != 4 || memcmp(env[e].key, "PATH", 4) != 0)
            continue;
        if (env[e].value == NULL) {
            path_var = env[e].base;
            path_len = strlen(path_var);
        } else if (env[e].value->type == J_STR) {
            path_var = env[e].value->str.s;
            path_len = env[e].value->str.len;
        } else {
            reply_failure(r, "AttributeError: '%s' object has no attribute 'split'",
                          jtypename(env[e].value));
            goto done;
        }
    }
    const struct jstr *arg0 = &argv->items[0].str;
    if (arg0->bad && !os_string(r, &argv->items[0]))
        goto done;
    int err = which(arg0, path_var, path_len, &program);

    /* posix_spawn's own checks of argv and env */
    if (err == 0) {
        cargv = calloc(argv->n + 1, sizeof *cargv);
        cenv = calloc(n_env + 1, sizeof *cenv);
        if (cargv == NULL || cenv == NULL)
            die(1);
        for (size_t k = 0; k < argv->n; k++) {
            if (!os_string(r, &argv->items[k]))
                goto done;
            cargv[k] = argv->items[k].str.s;
        }
        for (size_t e = 0; e < n_env; e++) {
            struct jstr key = {(char *)env[e].key, env[e].key_len, memchr(env[e].key, 0, env[e].key_len) != NULL, false};
            if (key.nul) {
                reply_failure(r, "ValueError: embedded null byte");
                goto done;
            }
            if (key.len == 0 || memchr(key.s + 1, '=', key.len - 1)) {
                reply_failure(r, "ValueError: illegal environment variable name");
                goto done;
            }
            const char *value = env[e].base;
            size_t value_len = value ? strlen(value) : 0;
            if (env[e].value) {
                if (!os_string(r, env[e].value))
                    goto done;
                value = env[e].value->str.s;
                value_len = env[e].value->str.len;
            }
            char *entry = malloc(key.len + value_len + 2);
            if (entry == NULL)
                die(1);
            memcpy(entry, key.s, key.len);
            entry[key.len] = '=';
            memcpy(entry + key.len + 1, value, value_len);
            entry[key.len + 1 + value_len] = 0;
            cenv[e] = entry;
        }
    }

    pid_t pid = -1;
    if (err == 0) {
        if (pipe2(fds[0], O_CLOEXEC) != 0 || pipe2(fds[1], O_CLOEXEC) != 0) {
            reply_oserror(r, errno);
            goto done;
        }
        posix_spawn_file_actions_t actions;
        posix_spawnattr_t attr;
        sigset_t none, restored;
        sigemptyset(&none);
        sigemptyset(&restored);
        sigaddset(&restored, SIGPIPE);
        sigaddset(&restored, SIGXFSZ);
        sigaddset(&restored, SIGINT);
        sigaddset(&restored, SIGHUP);
        err = posix_spawn_file_actions_init(&actions);
        if (err == 0) {
            err = posix_spawnattr_init(&attr);
            if (err == 0) {
                if ((err = posix_spawn_file_actions_adddup2(&actions, fds[0][1], 1)) == 0 &&
                    (err = posix_spawn_file_actions_adddup2(&actions, fds[1][1], 2)) == 0 &&
                    (err = posix_spawnattr_setflags(
                         &attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF |
                                    POSIX_SPAWN_SETSIGMASK)) == 0 &&
                    (err = posix_spawnattr_setsigdefault(&attr, &restored)) == 0 &&
                    (err = posix_spawnattr_setsigmask(&attr, &none)) == 0)
                    err = posix_spawn(&pid, program, &actions, &attr, cargv, cenv);
                posix_spawnattr_destroy(&attr);
            }
            posix_spawn_file_actions_destroy(&actions);
        }
    }
    if (err != 0) {
        /* What a shell would answer: 127 for a missing program, 126 for one it cannot run. */
        char space[128];
        const char *text = errtext(err, space, sizeof space);
        reply_int(r, "exit_code", err == ENOENT ? 127 : 126);
        buf_add(&r->part[1], arg0->s, arg0->len);
        buf_str(&r->part[1], ": ");
        buf_str(&r->part[1], text);
        buf_str(&r->part[1], "\n");
        reply_int(r, "out", 0);
        reply_int(r, "err", (long long)r->part[1].len);
        goto done;
    }
    close_fd(fds[0][1]);
    close_fd(fds[1][1]);
    fds[0][1] = fds[1][1] = -1;
    int readers[2] = {fds[0][0], fds[1][0]};
    fds[0][0] = fds[1][0] = -1; /* collect owns them now */
    int code = 0;
    bool timed_out = false;
    err = collect(pid, readers, deadline, r->part, &code, &timed_out);
    if (err == ENOMEM) {
        reply_failure(r, "MemoryError");
    } else if (err) {
        killpg(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        close_fd(readers[0]);
        close_fd(readers[1]);
        reply_oserror(r, err);
    } else if (timed_out) {
        reply_true(r, "timeout");
        reply_true(r, "started");
        reply_int(r, "out", (long long)r->part[0].len);
        reply_int(r, "err", (long long)r->part[1].len);
    } else {
        reply_int(r, "exit_code", code);
        reply_int(r, "out", (long long)r->part[0].len);
        reply_int(r, "err", (long long)r->part[1].len);
    }
done:
    for (int k = 0; k < 2; k++) {
        close_fd(fds[k][0]);
        close_fd(fds[k][1]);
    }
    if (cenv)
        for (size_t e = 0; e < n_env; e++)
            free(cenv[e]);
    free(cenv);
    free(cargv);
    free(program);
    free(env);
}

/* ------------------------------------------------------------------ dispatch */

static void dispatch(struct reply *r, const struct jval *h, const char *body, size_t len) {
    const struct jval *op = jget(h, "op");
    if (jstr_is(op, "write") || jstr_is(op, "read")) {
        const struct jval *dl = jget(h, "deadline");
        double deadline;
        if (dl && !real_number(dl, &deadline)) {
            reply_failure(r, "TypeError: '>=' not supported between instances of 'float' and '%s'",
                          jtypename(dl));
            return;
        }
        if (dl && monotonic() >= deadline) {
            /* The provider gave up on this request (e.g. the sandbox was frozen): do not act. */
            reply_error(r, "deadline passed before the request was read",
                        strlen("deadline passed before the request was read"), 0);
            return;
        }
    }
    if (jstr_is(op, "exec")) {
        op_exec(r, h);
    } else if (jstr_is(op, "write")) {
        op_write(r, h, body, len);
    } else if (jstr_is(op, "read")) {
        op_read(r, h);
    } else if (jstr_is(op, "ping")) {
        reply_true(r, "ok");
        reply_int(r, "pid", (long long)getpid());
        reply_int(r, "host_pid", g_host_pid);
        reply_int(r, "starttime", g_starttime);
    } else {
        struct buf text = {0};
        buf_str(&text, "unknown op ");
        repr_value(&text, op);
        reply_error(r, text.data, text.len, EINVAL);
        buf_free(&text);
    }
}

/* ------------------------------------------------------------------ connections */

struct conn {
    int fd;
    char *buf; /* buffered input: [start, end) not yet consumed */
    size_t start, end, cap;
};

static struct conn *conn_new(int fd) {
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->fd = fd;
    return c;
}

static void conn_free(struct conn *c) {
    close_fd(c->fd);
    free(c->buf);
    free(c);
}

/* More input into the buffer: > 0 bytes, 0 at EOF (or on an error: the connection is over). */
static ssize_t conn_fill(struct conn *c) {
    if (c->start > 0 && c->start == c->end)
        c->start = c->end = 0;
    if (c->cap - c->end < CHUNK) {
        if (c->start > 0) {
            memmove(c->buf, c->buf + c->start, c->end - c->start);
            c->end -= c->start;
            c->start = 0;
        }
        if (c->cap - c->end < CHUNK) {
            size_t cap = c->cap ? c->cap * 2 : 2 * CHUNK;
            char *b = realloc(c->buf, cap);
            if (b == NULL)
                return 0;
            c->buf = b;
            c->cap = cap;
        }
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->end, c->cap - c->end, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        c->end += (size_t)n;
        return n;
    }
}

enum { LINE_EOF, LINE_OK, LINE_TOO_LONG };

/* stream.readline(): the line (with its newline, if any) in line and len, valid until the next
 * read from c. */
static int read_line(struct conn *c, const char **line, size_t *len) {
    size_t scanned = 0;
    bool discarding = false;
    for (;;) {
        size_t unscanned = c->end - c->start - scanned;
        char *nl = unscanned ? memchr(c->buf + c->start + scanned, '\n', unscanned) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - (c->buf + c->start)) + 1;
            *line = c->buf + c->start;
            *len = n;
            c->start += n;
            return discarding ? LINE_TOO_LONG : LINE_OK;
        }
        if (c->end - c->start >= MAX_LINE) { /* drop it; answer an error at its end */
            discarding = true;
            c->start = c->end;
        }
        scanned = c->end - c->start;
        if (conn_fill(c) == 0) {
            if (discarding)
                return LINE_TOO_LONG;
            if (c->end == c->start)
                return LINE_EOF;
            *line = c->buf + c->start; /* the last line, without a newline */
            *len = c->end - c->start;
            c->start = c->end;
            return LINE_OK;
        }
    }
}

/* stream.read(n) into a new buffer: false when the connection ended first. */
static bool read_exact(struct conn *c, char *out, size_t n) {
    size_t have = c->end - c->start < n ? c->end - c->start : n;
    if (have)
        memcpy(out, c->buf + c->start, have);
    c->start += have;
    while (have < n) {
        ssize_t got = recv(c->fd, out + have, n - have, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        have += (size_t)got;
    }
    return true;
}

/* One request read: the header and body, or an error to answer. */
struct request {
    struct jval *header;
    char *body;
    size_t len;
    char error[256]; /* when header is NULL */
};

enum { RECV_END, RECV_OK };

/* agent._receive: RECV_END at the end of the connection (EOF, or EOF in the body). */
static int receive(struct conn *c, struct request *rq) {
    memset(rq, 0, sizeof *rq);
    const char *line;
    size_t n;
    int got = read_line(c, &line, &n);
    if (got == LINE_EOF)
        return RECV_END;
    if (got == LINE_TOO_LONG) {
        snprintf(rq->error, sizeof rq->error, "ValueError: header line longer than %zu bytes",
                 MAX_LINE);
        return RECV_OK;
    }
    rq->header = json_parse(line, n, rq->error, sizeof rq->error);
    if (rq->header == NULL)
        return RECV_OK;
    if (rq->header->type != J_OBJ) {
        snprintf(rq->error, sizeof rq->error, "AttributeError: '%s' object has no attribute 'get'",
                 jtypename(rq->header));
        jfree(rq->header);
        rq->header = NULL;
        return RECV_OK;
    }
    const struct jval *len = jget(rq->header, "len");
    if (len == NULL || !jtruthy(len))
        return RECV_OK;
    if (len->type == J_BOOL) {
        rq->len = 1;
    } else if (len->type != J_INT) {
        snprintf(rq->error, sizeof rq->error,
                 "TypeError: argument should be integer or None, not '%s'", jtypename(len));
    } else if (len->bigint) {
        snprintf(rq->error, sizeof rq->error,
                 "OverflowError: Python int too large to convert to C ssize_t");
    } else if (len->i < 0) { /* read(-n): to the end of the connection */
        struct buf all = {0};
        for (;;) {
            buf_add(&all, c->buf + c->start, c->end - c->start);
            c->start = c->end;
            if (conn_fill(c) == 0)
                break;
        }
        rq->body = all.data;
        rq->len = all.len;
        return RECV_OK;
    } else {
        rq->len = (size_t)len->i;
    }
    if (rq->error[0]) {
        jfree(rq->header);
        rq->header = NULL;
        return RECV_OK;
    }
    rq->body = malloc(rq->len ? rq->len : 1);
    if (rq->body == NULL) {
        snprintf(rq->error, sizeof rq->error, "MemoryError");
        jfree(rq->header);
        rq->header = NULL;
        rq->len = 0;
        return RECV_OK;
    }
    if (!read_exact(c, rq->body, rq->len)) {
        jfree(rq->header);
        free(rq->body);
        return RECV_END;
    }
    return RECV_OK;
}

/* agent._respond: false when the connection is gone. */
static bool respond(struct conn *c, struct request *rq) {
    struct reply r;
    reply_open(&r);
    if (rq->header == NULL)
        reply_error(&r, rq->error, strlen(rq->error), 0);
    else
        dispatch(&r, rq->header, rq->body, rq->len);
    bool ok = reply_send(c->fd, &r);
    reply_free(&r);
    jfree(rq->header);
    free(rq->body);
    rq->header = NULL;
    rq->body = NULL;
    return ok;
}

static void *connection_thread(void *arg) {
    struct conn *c = arg;
    struct request rq;
    while (receive(c, &rq) == RECV_OK && respond(c, &rq)) {
    }
    conn_free(c);
    return NULL;
}

/* ------------------------------------------------------------------ start-up */

static void enter_cwd(void) {
    if (chdir(is_dir(DEFAULT_CWD) ? DEFAULT_CWD : "/") != 0)
        die(1);
}

/* Gate.open: wait for PID 1's go; false when PID 1 failed instead. */
static bool gate_open(void) {
    char byte = 0;
    ssize_t n;
    while ((n = read(GO_FD, &byte, 1)) < 0 && errno == EINTR) {
    }
    close_fd(GO_FD);
    if (n != 1 || byte != 'g')
        return false;
    enter_cwd();
    return true;
}

static bool fd_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

static void set_cloexec(int fd) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0)
        die(1);
}

static bool parse_decimal(const char **p, const char *end, char stop, unsigned long long *out) {
    const char *s = *p;
    unsigned long long v = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        if (v > (ULLONG_MAX - 9) / 10)
            return false;
        v = v * 10 + (unsigned long long)(*s - '0');
        s++;
    }
    if (s == *p || s >= end || *s != stop)
        return false;
    *p = s + 1;
    *out = v;
    return true;
}

/* fd 6: "host_pid starttime seccomp_len\n" + the filter; exits with 2 when malformed. */
static void read_config(struct buf *filter) {
    struct buf cfg = {0};
    for (;;) {
        if (!buf_reserve(&cfg, 4096))
            die(2);
        ssize_t n = read(CONFIG_FD, cfg.data + cfg.len, 4096);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die(2);
        if (n == 0)
            break;
        cfg.len += (size_t)n;
        if (cfg.len > MAX_CONFIG)
            die(2);
    }
    if (close(CONFIG_FD) != 0 && errno != EINTR)
        die(2);
    const char *p = cfg.data, *end = cfg.data + cfg.len;
    unsigned long long host_pid, starttime, seccomp_len;
    if (cfg.len == 0 || !parse_decimal(&p, end, ' ', &host_pid) ||
        !parse_decimal(&p, end, ' ', &starttime) || !parse_decimal(&p, end, '\n', &seccomp_len))
        die(2);
    if (host_pid > LLONG_MAX || starttime > LLONG_MAX || seccomp_len % 8 != 0 ||
        seccomp_len / 8 > 65535 || (size_t)(end - p) != seccomp_len)
        die(2);
    g_host_pid = (long long)host_pid;
    g_starttime = (long long)starttime;
    buf_add(filter, p, (size_t)seccomp_len);
    buf_free(&cfg);
}

int main(void) {
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        die(3);
    struct buf filter = {0};
    read_config(&filter);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die(3);
    if (filter.len > 0) {
        struct sock_fprog prog = {.len = (unsigned short)(filter.len / 8),
                                  .filter = (struct sock_filter *)filter.data};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
            die(3);
    }
    buf_free(&filter);

    struct sigaction ignore = {.sa_handler = SIG_IGN}, dfl = {.sa_handler = SIG_DFL};
    if (sigaction(SIGPIPE, &ignore, NULL) != 0 || sigaction(SIGINT, &dfl, NULL) != 0)
        die(1);

    set_cloexec(LISTEN_FD); /* nothing of the agent's may leak into commands */
    bool first = fd_open(FIRST_FD), gate = fd_open(GO_FD);
    if (first)
        set_cloexec(FIRST_FD);
    if (gate)
        set_cloexec(GO_FD);
    else
        enter_cwd(); /* a restarted agent: the root is ready */

    if (first) {
        /* The first request (the create's ping) is read before the gate, answered after. */
        struct conn *c = conn_new(FIRST_FD);
        if (c == NULL)
            die(1);
        struct request rq;
        int got = receive(c, &rq);
        if (gate && !gate_open())
            die(1);
        if (got == RECV_OK && respond(c, &rq)) {
            if (!start_thread(connection_thread, c))
                conn_free(c);
        } else {
            conn_free(c);
        }
    } else if (gate && !gate_open()) {
        die(1);
    }

    for (;;) {
        int fd = accept4(LISTEN_FD, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                sleep_s(0.01); /* out of descriptors or memory: try later */
                continue;
            }
            die(1);
        }
        struct conn *c = conn_new(fd);
        if (c == NULL || !start_thread(connection_thread, c)) {
            /* no thread: pids.max reached (e.g. a fork bomb); try later */
            if (c)
                conn_free(c);
            else
                close_fd(fd);
            sleep_s(0.01);
        }
    }
}
