/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Persistent tunnels: what the daemon needs to open a user's tunnel again
 * after a restart or a crash, one file per tunnel in <state_dir>/tunnels/
 * (tg_persist_dir()), named <id>.tunnel after the tunnel's id. The
 * directory is created with mode 0700; each file is a GKeyFile of mode
 * 0600, written atomically (a synced temporary file renamed over it, the
 * directory synced after) and removed with unlink(2).
 *
 * Nothing secret goes there: credentials by path only (the agent socket or
 * the key file the owner named), never key material or descriptors; a
 * tunnel opened with agent-fd or identity-fd has no path to store.
 *
 * The format, one group, keys in the order written (lists end with ';',
 * GKeyFile escapes ';' and '\' inside items):
 *
 *   [Tunnel]
 *   id=12                        the tunnel id (required)
 *   created=1700000000000000     µs since the epoch, realtime (required)
 *   uid=1000                     the owner (required)
 *   user=alice                   the owner's name when saved (required)
 *   profile=intranet-db          a profile's tunnel: the profile has the
 *                                server, login, key and host key, so host,
 *                                port, remote-user, agent, identity and
 *                                host-key must be absent
 *   host=gw.corp.example.com     \
 *   port=22                       | required without profile
 *   remote-user=alice            /
 *   forwards=L 127.0.0.1:8080:intra:80;D 1080;    canonical specs (required)
 *   listeners=0 127.0.0.1 8080;1 127.0.0.1 1080;1 ::1 1080;
 *                                "FORWARD ADDRESS PORT": the index in
 *                                forwards of an L or D forward listening on
 *                                TCP, the numeric address and the port bound
 *   agent=/run/user/1000/ssh-agent.socket    \ exactly one without profile,
 *   identity=/home/alice/.ssh/id_ed25519     / none with one
 *   host-key=SHA256:...          optional
 *   keepalive=30                 seconds, 0 to 3600 (default 0)
 *   keepalive-count=3            0 to 100 (default 0)
 *   ciphers=aes256-ctr,aes128-ctr    optional
 *   description=...              optional, at most 256 bytes
 *   reconnect=true               true or false (default false)
 *   granted=org.tunnelgate.open;  polkit action ids granted at open
 *
 * What is read back is hostile input. A file that is a symbolic link, not
 * a regular file, not owned by the daemon's euid, writable by group or
 * others, larger than TG_PERSIST_MAX_FILE_SIZE, not named <id>.tunnel with
 * its own id, or with any field invalid, an unknown key or group (a newer
 * version wrote it?) or a key given twice is skipped and reported; it is
 * never fatal and never half read. tg_persist_save() refuses a record that
 * loading would skip.
 *
 * Requires: nothing of the daemon; blocking file I/O (small files). */
#pragma once

#include <glib.h>
#include <sys/types.h>

#define TG_PERSIST_DIR_NAME "tunnels"
#define TG_PERSIST_SUFFIX ".tunnel"
#define TG_PERSIST_MAX_FILE_SIZE (64 * 1024)
#define TG_PERSIST_MAX_FORWARDS 32
#define TG_PERSIST_MAX_KEEPALIVE 3600
#define TG_PERSIST_MAX_KEEPALIVE_COUNT 100
#define TG_PERSIST_MAX_DESCRIPTION 256

/* One listening socket of an L or D forward, so that a restart binds the
 * same port (also one the kernel chose for port 0). */
typedef struct {
  guint forward_index; /* index in the record's forwards (not a tunnel slot) */
  char *address;       /* numeric IPv4 or IPv6 address, as bound: "::1" */
  guint16 port;        /* 1 to 65535, the port bound */
} TgPersistListener;

/* A plain struct: set the fields, tg_persist_record_free() frees them. */
typedef struct {
  char *id;       /* "12": 1 to 20 digits, not starting with 0, ≤ G_MAXUINT64 */
  gint64 created; /* g_get_real_time() when opened, ≥ 0 */
  uid_t uid;      /* the owner, 0 to 4294967294 */
  char *user;     /* the owner's name when saved; the daemon asks NSS again */

  char *profile;     /* a profile name, or NULL */
  char *host;        /* without profile: the server, brackets removed */
  guint16 port;      /* without profile: 1 to 65535 */
  char *remote_user; /* without profile: the login name on the server */

  GPtrArray *forwards;  /* char*: canonical forward specs, 1 to 32 */
  GPtrArray *listeners; /* TgPersistListener*, at most 2 per forward */

  char *agent;    /* absolute path of the owner's agent socket, or NULL */
  char *identity; /* absolute path of the owner's key file, or NULL */

  char *host_key;          /* "SHA256:" and 43 base64 characters, or NULL */
  guint32 keepalive;       /* seconds, 0: off */
  guint32 keepalive_count; /* 0: the default */
  char *ciphers;           /* comma list of cipher names, or NULL */
  char *description;       /* no control characters, or NULL */
  gboolean reconnect;
  GPtrArray *granted; /* char*: polkit action ids (tg-names.h), each once */
} TgPersistRecord;

/* An empty record: empty arrays, everything else zero. */
TgPersistRecord *tg_persist_record_new(void);
void tg_persist_record_free(TgPersistRecord *record);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgPersistRecord, tg_persist_record_free)

void tg_persist_record_add_listener(TgPersistRecord *record, guint forward_index,
                                    const char *address, guint16 port);

/* <state_dir>/tunnels: the @dir of the functions below. */
char *tg_persist_dir(const char *state_dir);

/* A tunnel id as records and file names carry it. */
gboolean tg_persist_id_is_valid(const char *id);

/* Whether @record may be saved; TG_ERROR_INVALID_ARGUMENT with a message
 * "@what: problem" otherwise (the same checks as loading). */
gboolean tg_persist_record_check(const TgPersistRecord *record, const char *what,
                                 GError **error);

/* Writes @dir/<id>.tunnel, creating @dir (0700) when missing and taking
 * group and others' permissions away from it. TG_ERROR_INVALID_ARGUMENT
 * for a record loading would skip, TG_ERROR_FAILED naming the path when
 * writing fails (the old file, if any, is then unchanged). */
gboolean tg_persist_save(const char *dir, const TgPersistRecord *record, GError **error);

/* Removes @dir/<id>.tunnel; TRUE when there was none. */
gboolean tg_persist_remove(const char *dir, const char *id, GError **error);

/* Every valid record in @dir, sorted by id (numerically); an empty array
 * when @dir does not exist. Each file skipped adds one message to
 * *@problems (a new array, always set when @problems is not NULL) naming
 * the file and what was wrong; with @problems NULL they are logged as
 * warnings. A directory that is not the daemon's, or writable by group or
 * others, is one problem and yields no record. */
GPtrArray *tg_persist_load_all(const char *dir, GPtrArray **problems);

/* The file's text, and back. @name is the file the text came from (its
 * base name must be <id>.tunnel); messages start with it. */
char *tg_persist_record_to_data(const TgPersistRecord *record, gsize *length);
TgPersistRecord *tg_persist_record_from_data(const char *data, gsize length,
                                             const char *name, GError **error);
