/*
 * The fake host commands (iscsiadm, multipath, multipathd) as a native thin client: the same
 * behaviour as sim-cli.ts, without a Node start per call (a first iSCSI login runs four of them).
 *
 *   sim-cli.bin --sim-root R --tool TOOL ARGS...
 *
 * The first --sim-root and a --tool before any other argument are its own; everything else passes
 * through verbatim. It sends the binary tool framing of protocol.ts to R/run/kernel.sock, writes the
 * reply's stdout and stderr bytes and exits with its code; a `hang` reply blocks until killed (fault
 * switch). When the kernel cannot be reached it prints what the real tool prints without its daemon.
 * As iscsiadm, in the modes that read or write records, it holds open-iscsi's DB lock
 * (R/run/lock/iscsi/lock.write) while the kernel answers, taken and released like open-iscsi 2.1.8's
 * idbm_lock/idbm_unlock: killed meanwhile, it leaves the lock behind as the real one does.
 * Compiled on demand by host.ts (cc -O2 -Wall); plain C99 + POSIX, libc only.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_MAGIC "SIM1 "
#define KERNEL_SOCKET "run/kernel.sock"
#define EXIT_NO_REPLY 1
/* open-iscsi's LOCK_DIR under the root, and its LOCK_FILE / LOCK_WRITE_FILE (usr/idbm.h) */
#define LOCK_DIR "run/lock/iscsi"
#define LOCK_FILE LOCK_DIR "/lock"
#define LOCK_WRITE_FILE LOCK_DIR "/lock.write"
/* idbm_lock: link() tried 3000 times, 10 ms apart, then it goes on without the lock */
#define LOCK_ATTEMPTS 3000
#define LOCK_RETRY_NS 10000000L
#define LOCK_DIR_MODE 0770
#define LOCK_FILE_MODE 0666
#define EXIT_IDBM 6 /* ISCSI_ERR_IDBM */
#define PATH_BYTES 4096

struct no_daemon {
  const char *tool;
  const char *message;
  int code;
};

/* what the real tools print when iscsid / multipathd cannot be reached; the first is the default */
static const struct no_daemon NO_DAEMON[] = {
  { "iscsiadm", "iscsiadm: can not connect to iSCSI daemon (111)!\n", 20 },
  { "multipath", "ERROR: failed to connect to multipathd\n", 1 },
  { "multipathd", "ERROR: failed to connect to multipathd\n", 1 },
};

struct buffer {
  char *data;
  size_t len;
  size_t cap;
};

static void die_oom(void) {
  static const char msg[] = "sim-cli: out of memory\n";
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
  _exit(EXIT_NO_REPLY);
}

static void buffer_append(struct buffer *b, const void *data, size_t len) {
  if (len > (size_t)-1 - b->len) die_oom();
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + len) {
      if (cap > (size_t)-1 / 2) die_oom();
      cap *= 2;
    }
    char *grown = realloc(b->data, cap);
    if (!grown) die_oom();
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
}

static void buffer_append_size(struct buffer *b, const char *prefix, size_t n) {
  char text[32];
  int len = snprintf(text, sizeof text, "%s%zu", prefix, n);
  buffer_append(b, text, (size_t)len);
}

/* Writes all of data to fd, through short writes and signals; 0 on success, -1 on error. */
static int write_all(int fd, const char *data, size_t len, int flags) {
  while (len > 0) {
    ssize_t n = flags ? send(fd, data, len, flags) : write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

/* R/<rel>, as path.join(R, rel) would name it; -1 when it does not fit */
static int root_path(char *out, size_t size, const char *root, const char *rel) {
  size_t root_len = strlen(root);
  while (root_len > 1 && root[root_len - 1] == '/') root_len--;
  int n = root_len == 0
    ? snprintf(out, size, "%s", rel)
    : snprintf(out, size, "%.*s%s%s", (int)root_len, root, root[root_len - 1] == '/' ? "" : "/", rel);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* The modes whose records iscsiadm reads or writes under the DB lock: node, discovery(db), iface
 * (session listings, logouts by session and rescans work on sysfs). */
static int takes_db_lock(const char *tool, char **args, int n) {
  if (strcmp(tool, "iscsiadm") != 0) return 0;
  for (int i = 0; i < n; i++) {
    const char *mode = NULL;
    if ((strcmp(args[i], "-m") == 0 || strcmp(args[i], "--mode") == 0) && i + 1 < n) mode = args[i + 1];
    else if (strncmp(args[i], "--mode=", 7) == 0) mode = args[i] + 7;
    else if (strncmp(args[i], "-m", 2) == 0 && args[i][2] != '\0') mode = args[i] + 2;
    if (mode) {
      return strcmp(mode, "node") == 0 || strcmp(mode, "discovery") == 0 ||
             strcmp(mode, "discoverydb") == 0 || strcmp(mode, "iface") == 0;
    }
  }
  return 0;
}

static char lock_write_path[PATH_BYTES];
static int lock_taken;

/* idbm_unlock: removes lock.write, whether this process linked it or went on after waiting */
static void db_unlock(void) {
  if (!lock_taken) return;
  lock_taken = 0;
  unlink(lock_write_path);
}

static void db_lock_fail(const char *first, const char *path, int err) {
  fprintf(stderr, "iscsiadm: %s\n", first);
  if (path) fprintf(stderr, "iscsiadm: Could not lock discovery DB: %s: %s\n", path, strerror(err));
  exit(EXIT_IDBM);
}

/* idbm_lock: make the lock dir and file if missing, then link lock → lock.write; while another
 * process holds it, try again every 10 ms, and after 3000 tries go on without it. */
static void db_lock(const char *root) {
  char dir[PATH_BYTES], file[PATH_BYTES];
  if (root_path(dir, sizeof dir, root, LOCK_DIR) < 0 || root_path(file, sizeof file, root, LOCK_FILE) < 0 ||
      root_path(lock_write_path, sizeof lock_write_path, root, LOCK_WRITE_FILE) < 0) {
    db_lock_fail("lock path too long", NULL, 0);
  }
  if (access(dir, F_OK) != 0 && mkdir(dir, LOCK_DIR_MODE) != 0 && errno != EEXIST) {
    fprintf(stderr, "iscsiadm: Could not open %s. Exiting\n", dir);
    exit(EXIT_IDBM);
  }
  int fd = open(file, O_RDWR | O_CREAT, LOCK_FILE_MODE);
  if (fd >= 0) close(fd);
  const struct timespec retry = { 0, LOCK_RETRY_NS };
  for (int i = 0; i < LOCK_ATTEMPTS; i++) {
    if (link(file, lock_write_path) == 0) break;
    if (errno != EEXIST) db_lock_fail("Maybe you are not root?", lock_write_path, errno);
    nanosleep(&retry, NULL);
  }
  lock_taken = 1;
  atexit(db_unlock);
}

static void no_daemon_exit(const char *tool) {
  const struct no_daemon *d = &NO_DAEMON[0];
  for (size_t i = 0; i < sizeof NO_DAEMON / sizeof NO_DAEMON[0]; i++) {
    if (strcmp(NO_DAEMON[i].tool, tool) == 0) d = &NO_DAEMON[i];
  }
  write_all(STDERR_FILENO, d->message, strlen(d->message), 0);
  exit(d->code);
}

static void no_reply_exit(const char *tool) {
  static const char suffix[] = ": no reply from the simulated kernel\n";
  struct buffer msg = { 0 };
  buffer_append(&msg, tool, strlen(tool));
  buffer_append(&msg, suffix, sizeof suffix - 1);
  write_all(STDERR_FILENO, msg.data, msg.len, 0);
  exit(EXIT_NO_REPLY);
}

/* Parses a non-negative decimal at *p up to the character `end`; advances *p past `end`. */
static int parse_size(const char **p, const char *limit, char end, size_t *out) {
  const char *s = *p;
  size_t v = 0;
  if (s >= limit || *s < '0' || *s > '9') return -1;
  for (; s < limit && *s >= '0' && *s <= '9'; s++) {
    size_t digit = (size_t)(*s - '0');
    if (v > ((size_t)-1 - digit) / 10) return -1;
    v = v * 10 + digit;
  }
  if (s >= limit || *s != end) return -1;
  *p = s + 1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  const char *root = "";
  const char *tool = "iscsiadm";
  /* argv minus our own options, in order; at most argc entries */
  char **rest = calloc((size_t)argc + 1, sizeof *rest);
  int nrest = 0;
  if (!rest) die_oom();
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--sim-root") == 0 && root[0] == '\0') {
      root = ++i < argc ? argv[i] : "";
    } else if (strcmp(argv[i], "--tool") == 0 && nrest == 0) {
      if (++i < argc) tool = argv[i];
    } else {
      rest[nrest++] = argv[i];
    }
  }

  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (root_path(addr.sun_path, sizeof addr.sun_path, root, KERNEL_SOCKET) < 0) no_daemon_exit(tool);

  /* request: "SIM1 <n> <len>...\n" then tool and arguments back to back */
  struct buffer req = { 0 };
  buffer_append(&req, REQUEST_MAGIC, strlen(REQUEST_MAGIC));
  buffer_append_size(&req, "", (size_t)nrest + 1);
  buffer_append_size(&req, " ", strlen(tool));
  for (int i = 0; i < nrest; i++) buffer_append_size(&req, " ", strlen(rest[i]));
  buffer_append(&req, "\n", 1);
  buffer_append(&req, tool, strlen(tool));
  for (int i = 0; i < nrest; i++) buffer_append(&req, rest[i], strlen(rest[i]));

  int sock = socket(AF_UNIX, SOCK_STREAM, 0);
  if (sock < 0) no_daemon_exit(tool);
  int rc;
  do rc = connect(sock, (struct sockaddr *)&addr, sizeof addr); while (rc < 0 && errno == EINTR);
  if (rc < 0) no_daemon_exit(tool);
  /* with the daemon there: the DB lock, held until the answer is in (exit releases it) */
  if (takes_db_lock(tool, rest, nrest)) db_lock(root);
  /* MSG_NOSIGNAL: a kernel gone mid-request is a connection failure, not a SIGPIPE */
  if (write_all(sock, req.data, req.len, MSG_NOSIGNAL) < 0) no_daemon_exit(tool);
  free(req.data);

  /* reply: read to EOF (the kernel closes after answering) */
  struct buffer reply = { 0 };
  char chunk[65536];
  for (;;) {
    ssize_t n = read(sock, chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      no_daemon_exit(tool);
    }
    if (n == 0) break;
    buffer_append(&reply, chunk, (size_t)n);
  }
  close(sock);

  /* header "<code> <hang> <stdoutLen> <stderrLen>\n" */
  const char *p = reply.data;
  const char *limit = reply.data + reply.len;
  if (reply.len == 0) no_reply_exit(tool);
  int negative = *p == '-';
  if (negative) p++;
  size_t code, hang, out_len, err_len;
  if (parse_size(&p, limit, ' ', &code) < 0 || parse_size(&p, limit, ' ', &hang) < 0 || hang > 1 ||
      parse_size(&p, limit, ' ', &out_len) < 0 || parse_size(&p, limit, '\n', &err_len) < 0 ||
      out_len > (size_t)(limit - p) || err_len != (size_t)(limit - p) - out_len) {
    no_reply_exit(tool);
  }
  if (hang) {
    /* fault switch: behave like a command stuck in the kernel (in iscsid or on the network, where
     * iscsiadm holds no DB lock) until the caller kills it */
    db_unlock();
    for (;;) pause();
  }
  db_unlock();
  if (out_len && write_all(STDOUT_FILENO, p, out_len, 0) < 0) return EXIT_NO_REPLY;
  if (err_len && write_all(STDERR_FILENO, p + out_len, err_len, 0) < 0) return EXIT_NO_REPLY;
  /* like Node's process.exitCode: the status is the code's low 8 bits */
  return (int)((negative ? 0u - (unsigned)code : (unsigned)code) & 0xff);
}
