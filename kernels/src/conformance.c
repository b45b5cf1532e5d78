/*
 * conformance: probes the host for the conformance suite. Every CCGSC host
 * (the server's wasmtime host, the browser's WASI shim) must produce
 * byte-identical stdout and the same exit code for every command.
 *
 * Input: the first line of stdin is a command word, optionally followed by a
 * space and an argument. Output: a deterministic report, one item per line;
 * numbers are WASI errno values (0 = success). Exit 0 unless noted.
 *
 *   args                 argc=N, then argv[i]=... per element
 *   env                  the environment entries, sorted bytewise
 *   stdin-echo           echoes the rest of stdin after the first line
 *   static               static=<len> and fnv1a64=<hex> of /ccgsc/static,
 *                        static=absent, or static=error errno=N
 *   checkpoint-read      checkpoint=<contents> or checkpoint=absent
 *   checkpoint-write X   checkpoint(X) -> rc=<return value>
 *   checkpoint-big       checkpoint(5 MiB of zeros) -> rc=<return value>
 *   progress             progress(0.25), (0.5), (1.0) -> ok
 *   isatty               isatty(fd)=0|1 for fds 0, 1, 2
 *   fdstat               errno and WASI filetype of fds 0, 1, 2
 *   sock                 errnos of sock_accept/recv/send/shutdown on fd 0
 *   clock                errnos of clock_res_get/clock_time_get, 4 clocks
 *   poll                 poll_oneoff with a 1 ms relative clock subscription
 *   fs                   preopens, then errnos of escaping/writing opens
 *   random               errno of random_get(16 bytes)
 *   fdcalls              errnos of fd_sync, fd_datasync, fd_advise, fd_allocate,
 *                        fd_fdstat_set_flags, fd_pwrite and fd_pread on fds 0..3
 *   rights               filetype, flags and rights of fds 0..3 and of
 *                        /ccgsc/static opened read-only (when present)
 *   filestat             filetype, nlink and size (of files) by fd_filestat_get
 *                        and path_filestat_get, for stdio, /ccgsc and its files
 *   readlink             errnos of path_readlink on /ccgsc entries and on stdin
 *   output-then-spin     writes a line to stdout (flushed) and one to stderr,
 *                        then loops forever: what a host keeps after a timeout
 *   exit N               exits with N, prints nothing
 * Unknown command: message on stderr, exit 2.
 */
#include "../ccgsc.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <wasi/api.h>

extern char **environ;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *clock_names[4] = {"realtime", "monotonic", "process_cputime",
                                     "thread_cputime"};

static void cmd_args(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
}

static void cmd_env(void) {
    size_t n = 0;
    while (environ != NULL && environ[n] != NULL) n++;
    char **sorted = malloc((n + 1) * sizeof *sorted);
    if (sorted == NULL) exit(1);
    for (size_t i = 0; i < n; i++) sorted[i] = environ[i];
    qsort(sorted, n, sizeof *sorted, cmp_str);
    for (size_t i = 0; i < n; i++) printf("%s\n", sorted[i]);
    free(sorted);
}

static void cmd_static(void) {
    size_t len;
    unsigned char *data = ccgsc_read_file(CCGSC_STATIC_PATH, &len);
    if (data == NULL) {
        if (errno == ENOENT) printf("static=absent\n");
        else printf("static=error errno=%d\n", errno);
        return;
    }
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ data[i]) * 0x100000001b3ULL;
    printf("static=%zu\nfnv1a64=%016llx\n", len, (unsigned long long)h);
    free(data);
}

static void cmd_checkpoint_read(void) {
    size_t len;
    unsigned char *data = ccgsc_read_file(CCGSC_CHECKPOINT_PATH, &len);
    if (data == NULL) {
        if (errno == ENOENT) printf("checkpoint=absent\n");
        else printf("checkpoint=error errno=%d\n", errno);
        return;
    }
    printf("checkpoint=");
    fwrite(data, 1, len, stdout);
    printf("\n");
    free(data);
}

static void cmd_checkpoint_big(void) {
    size_t len = 5u << 20;
    void *zeros = calloc(len, 1);
    if (zeros == NULL) exit(1);
    printf("rc=%d\n", (int)ccgsc_checkpoint(zeros, (int32_t)len));
    free(zeros);
}

static void cmd_isatty(void) {
    for (int fd = 0; fd < 3; fd++) printf("isatty(%d)=%d\n", fd, isatty(fd) ? 1 : 0);
}

static void cmd_fdstat(void) {
    for (int fd = 0; fd < 3; fd++) {
        __wasi_fdstat_t st;
        __wasi_errno_t e = __wasi_fd_fdstat_get((__wasi_fd_t)fd, &st);
        if (e == 0)
            printf("fd%d errno=0 filetype=%d\n", fd, (int)st.fs_filetype);
        else
            printf("fd%d errno=%d\n", fd, (int)e);
    }
}

static void cmd_sock(void) {
    __wasi_fd_t newfd = 0;
    unsigned char buf[16] = {0};
    __wasi_iovec_t iov = {buf, sizeof buf};
    __wasi_ciovec_t ciov = {buf, 1};
    __wasi_size_t n = 0;
    __wasi_roflags_t roflags = 0;
    printf("sock_accept=%d\n", (int)__wasi_sock_accept(0, 0, &newfd));
    printf("sock_recv=%d\n", (int)__wasi_sock_recv(0, &iov, 1, 0, &n, &roflags));
    printf("sock_send=%d\n", (int)__wasi_sock_send(0, &ciov, 1, 0, &n));
    printf("sock_shutdown=%d\n", (int)__wasi_sock_shutdown(0, __WASI_SDFLAGS_RD | __WASI_SDFLAGS_WR));
}

static void cmd_clock(void) {
    for (int id = 0; id < 4; id++) {
        __wasi_timestamp_t t = 0;
        printf("clock_res_get(%s)=%d\n", clock_names[id],
               (int)__wasi_clock_res_get((__wasi_clockid_t)id, &t));
        printf("clock_time_get(%s)=%d\n", clock_names[id],
               (int)__wasi_clock_time_get((__wasi_clockid_t)id, 1, &t));
    }
}

static void cmd_poll(void) {
    __wasi_subscription_t sub;
    __wasi_event_t ev;
    __wasi_size_t nevents = 0;
    memset(&sub, 0, sizeof sub);
    memset(&ev, 0, sizeof ev);
    sub.userdata = 42;
    sub.u.tag = __WASI_EVENTTYPE_CLOCK;
    sub.u.u.clock.id = __WASI_CLOCKID_MONOTONIC;
    sub.u.u.clock.timeout = 1000000; /* 1 ms, relative */
    sub.u.u.clock.precision = 0;
    sub.u.u.clock.flags = 0;
    __wasi_errno_t e = __wasi_poll_oneoff(&sub, &ev, 1, &nevents);
    printf("poll errno=%d nevents=%u\n", (int)e, (unsigned)nevents);
    if (e == 0 && nevents == 1)
        printf("event userdata=%llu errno=%d type=%d\n", (unsigned long long)ev.userdata,
               (int)ev.error, (int)ev.type);
}

static void print_open(const char *label, int fd) {
    if (fd >= 0) {
        printf("%s=ok\n", label);
        close(fd);
    } else {
        printf("%s=%d\n", label, errno);
    }
}

static void cmd_fs(void) {
    int first_dir = -1;
    for (__wasi_fd_t fd = 3; fd < 64; fd++) {
        __wasi_prestat_t ps;
        __wasi_errno_t e = __wasi_fd_prestat_get(fd, &ps);
        if (e != 0) {
            printf("prestat(%u)=%d\n", (unsigned)fd, (int)e);
            break;
        }
        char name[256];
        size_t nlen = ps.u.dir.pr_name_len < sizeof name - 1 ? ps.u.dir.pr_name_len
                                                               : sizeof name - 1;
        e = __wasi_fd_prestat_dir_name(fd, (uint8_t *)name, (__wasi_size_t)nlen);
        name[e == 0 ? nlen : 0] = 0;
        printf("preopen fd=%u errno=%d name=%s\n", (unsigned)fd, (int)e, name);
        if (first_dir < 0) first_dir = (int)fd;
    }
    print_open("open(/etc/passwd,r)", open("/etc/passwd", O_RDONLY));
    print_open("open(/ccgsc/x,w)", open("/ccgsc/x", O_WRONLY | O_CREAT | O_TRUNC, 0644));
    if (first_dir >= 0) {
        /* Straight to the host, bypassing wasi-libc's path resolution. */
        __wasi_fd_t fd;
        __wasi_errno_t e = __wasi_path_open((__wasi_fd_t)first_dir, 0, "../etc/passwd", 0,
                                            __WASI_RIGHTS_FD_READ, 0, 0, &fd);
        printf("path_open(preopen,../etc/passwd)=%d\n", (int)e);
        if (e == 0) (void)__wasi_fd_close(fd);
        e = __wasi_path_open((__wasi_fd_t)first_dir, 0, "x", __WASI_OFLAGS_CREAT,
                             __WASI_RIGHTS_FD_WRITE, 0, 0, &fd);
        printf("path_open(preopen,x,creat)=%d\n", (int)e);
        if (e == 0) (void)__wasi_fd_close(fd);
    }
}

static void print_fdcalls(const char *label, __wasi_fd_t fd) {
    uint8_t byte = 'x';
    __wasi_ciovec_t ciov = {&byte, 1};
    __wasi_iovec_t iov = {&byte, 1};
    __wasi_size_t n = 0;
    printf("%s sync=%d datasync=%d advise=%d allocate=%d set_flags=%d pwrite=%d pread=%d\n",
           label, (int)__wasi_fd_sync(fd), (int)__wasi_fd_datasync(fd),
           (int)__wasi_fd_advise(fd, 0, 0, __WASI_ADVICE_NORMAL),
           (int)__wasi_fd_allocate(fd, 0, 1), (int)__wasi_fd_fdstat_set_flags(fd, 0),
           (int)__wasi_fd_pwrite(fd, &ciov, 1, 0, &n), (int)__wasi_fd_pread(fd, &iov, 1, 0, &n));
}

static void cmd_fdcalls(void) {
    char label[16];
    for (__wasi_fd_t fd = 0; fd < 4; fd++) {
        snprintf(label, sizeof label, "fd%u", (unsigned)fd);
        print_fdcalls(label, fd);
    }
    int fd = open(CCGSC_STATIC_PATH, O_RDONLY);
    if (fd >= 0) {
        print_fdcalls("static", (__wasi_fd_t)fd);
        close(fd);
    }
}

static void print_fdstat(const char *label, __wasi_fd_t fd) {
    __wasi_fdstat_t st;
    __wasi_errno_t e = __wasi_fd_fdstat_get(fd, &st);
    if (e != 0) {
        printf("%s errno=%d\n", label, (int)e);
        return;
    }
    printf("%s filetype=%d flags=%d base=%016llx inheriting=%016llx\n", label,
           (int)st.fs_filetype, (int)st.fs_flags, (unsigned long long)st.fs_rights_base,
           (unsigned long long)st.fs_rights_inheriting);
}

static void cmd_rights(void) {
    char label[16];
    for (__wasi_fd_t fd = 0; fd < 4; fd++) {
        snprintf(label, sizeof label, "fd%u", (unsigned)fd);
        print_fdstat(label, fd);
    }
    int fd = open(CCGSC_STATIC_PATH, O_RDONLY);
    if (fd >= 0) {
        print_fdstat("static", (__wasi_fd_t)fd);
        close(fd);
    } else {
        printf("static open=%d\n", errno);
    }
}

static void print_filestat(const char *label, __wasi_errno_t e, const __wasi_filestat_t *st) {
    if (e != 0) {
        printf("%s errno=%d\n", label, (int)e);
        return;
    }
    /* Directory sizes are the host file system's business: only files' sizes are pinned. */
    if (st->filetype == __WASI_FILETYPE_DIRECTORY)
        printf("%s filetype=%d nlink=%llu\n", label, (int)st->filetype,
               (unsigned long long)st->nlink);
    else
        printf("%s filetype=%d nlink=%llu size=%llu\n", label, (int)st->filetype,
               (unsigned long long)st->nlink, (unsigned long long)st->size);
}

static void cmd_filestat(void) {
    __wasi_filestat_t st;
    char label[32];
    for (__wasi_fd_t fd = 0; fd < 4; fd++) {
        snprintf(label, sizeof label, "fd%u", (unsigned)fd);
        print_filestat(label, __wasi_fd_filestat_get(fd, &st), &st);
    }
    static const char *paths[] = {".", "static", "checkpoint", "missing"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        snprintf(label, sizeof label, "path(%s)", paths[i]);
        print_filestat(label, __wasi_path_filestat_get(3, 0, paths[i], &st), &st);
    }
    int fd = open(CCGSC_STATIC_PATH, O_RDONLY);
    if (fd >= 0) {
        print_filestat("open(static)", __wasi_fd_filestat_get((__wasi_fd_t)fd, &st), &st);
        close(fd);
    }
}

static void cmd_readlink(void) {
    static const char *paths[] = {"static", "missing", ".", "../x"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        uint8_t buf[64];
        __wasi_size_t n = 0;
        __wasi_errno_t e = __wasi_path_readlink(3, paths[i], buf, sizeof buf, &n);
        printf("readlink(%s)=%d n=%u\n", paths[i], (int)e, (unsigned)n);
    }
    uint8_t buf[64];
    __wasi_size_t n = 0;
    printf("readlink(fd0,x)=%d\n", (int)__wasi_path_readlink(0, "x", buf, sizeof buf, &n));
}

static void cmd_output_then_spin(void) {
    printf("partial stdout\n");
    fflush(stdout);
    fputs("kernel stderr before the loop\n", stderr);
    for (volatile uint64_t i = 0;; i++) {
    }
}

static void cmd_random(void) {
    uint8_t buf[16];
    printf("random errno=%d\n", (int)__wasi_random_get(buf, sizeof buf));
}

int main(int argc, char **argv) {
    size_t len;
    char *input = (char *)ccgsc_read_all(stdin, &len);
    if (input == NULL) {
        fputs("conformance: cannot read stdin\n", stderr);
        return 2;
    }
    char *nl = memchr(input, '\n', len);
    char *rest = nl ? nl + 1 : input + len;
    size_t rest_len = (size_t)(input + len - rest);
    if (nl) *nl = 0;
    char *arg = strchr(input, ' ');
    if (arg) *arg++ = 0;
    const char *cmd = input;

    if (!strcmp(cmd, "args")) cmd_args(argc, argv);
    else if (!strcmp(cmd, "env")) cmd_env();
    else if (!strcmp(cmd, "stdin-echo")) fwrite(rest, 1, rest_len, stdout);
    else if (!strcmp(cmd, "static")) cmd_static();
    else if (!strcmp(cmd, "checkpoint-read")) cmd_checkpoint_read();
    else if (!strcmp(cmd, "checkpoint-write") && arg)
        printf("rc=%d\n", (int)ccgsc_checkpoint(arg, (int32_t)strlen(arg)));
    else if (!strcmp(cmd, "checkpoint-big")) cmd_checkpoint_big();
    else if (!strcmp(cmd, "progress")) {
        ccgsc_progress(0.25);
        ccgsc_progress(0.5);
        ccgsc_progress(1.0);
        printf("ok\n");
    } else if (!strcmp(cmd, "isatty")) cmd_isatty();
    else if (!strcmp(cmd, "fdstat")) cmd_fdstat();
    else if (!strcmp(cmd, "sock")) cmd_sock();
    else if (!strcmp(cmd, "clock")) cmd_clock();
    else if (!strcmp(cmd, "poll")) cmd_poll();
    else if (!strcmp(cmd, "fs")) cmd_fs();
    else if (!strcmp(cmd, "random")) cmd_random();
    else if (!strcmp(cmd, "fdcalls")) cmd_fdcalls();
    else if (!strcmp(cmd, "rights")) cmd_rights();
    else if (!strcmp(cmd, "filestat")) cmd_filestat();
    else if (!strcmp(cmd, "readlink")) cmd_readlink();
    else if (!strcmp(cmd, "output-then-spin")) cmd_output_then_spin();
    else if (!strcmp(cmd, "exit") && arg) {
        uint64_t code;
        if (ccgsc_parse_u64s(arg, &code, 1) != 0 || code > 0xFFFFFFFFu) {
            fputs("conformance: exit needs a decimal code\n", stderr);
            return 2;
        }
        fflush(stdout);
        exit((int)(uint32_t)code);
    } else {
        fprintf(stderr, "conformance: unknown command \"%s\"\n", cmd);
        return 2;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
