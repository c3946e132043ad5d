/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for persist.c: the records of persistent tunnels, their text,
 * and the directory of them under the state directory. They run as root
 * in CI and as anyone else: "the daemon's" is geteuid()'s. */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "persist.h"
#include "tg-error.h"
#include "test-files.h"

#define FINGERPRINT "SHA256:LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE"

/* What full_record() writes, byte for byte: the format is the contract. */
static const char full_text[] =
    "# A tunnel tunnelgated opens again when it starts (tunnelgated(8)).\n"
    "# Written by the daemon: do not edit.\n"
    "[Tunnel]\n"
    "id=12\n"
    "created=1700000000123456\n"
    "uid=1000\n"
    "user=alice\n"
    "host=gw.corp.example.com\n"
    "port=2222\n"
    "remote-user=alice.admin\n"
    "forwards=L 127.0.0.1:8080:intra:80;D 0;R 9000:localhost:22;\n"
    "listeners=0 127.0.0.1 8080;1 127.0.0.1 40123;1 ::1 40123;\n"
    "agent=/run/user/1000/ssh-agent.socket\n"
    "host-key=" FINGERPRINT "\n"
    "keepalive=30\n"
    "keepalive-count=3\n"
    "ciphers=aes256-gcm@openssh.com,aes128-ctr\n"
    "description=\\sbuild farm; \\\\ caf\xc3\xa9 \n"
    "reconnect=true\n"
    "granted=org.tunnelgate.open;org.tunnelgate.open-remote;\n";

static TgPersistRecord *
full_record(void)
{
  TgPersistRecord *record = tg_persist_record_new();

  record->id = g_strdup("12");
  record->created = 1700000000123456;
  record->uid = 1000;
  record->user = g_strdup("alice");
  record->host = g_strdup("gw.corp.example.com");
  record->port = 2222;
  record->remote_user = g_strdup("alice.admin");
  g_ptr_array_add(record->forwards, g_strdup("L 127.0.0.1:8080:intra:80"));
  g_ptr_array_add(record->forwards, g_strdup("D 0"));
  g_ptr_array_add(record->forwards, g_strdup("R 9000:localhost:22"));
  tg_persist_record_add_listener(record, 0, "127.0.0.1", 8080);
  tg_persist_record_add_listener(record, 1, "127.0.0.1", 40123);
  tg_persist_record_add_listener(record, 1, "::1", 40123);
  record->agent = g_strdup("/run/user/1000/ssh-agent.socket");
  record->host_key = g_strdup(FINGERPRINT);
  record->keepalive = 30;
  record->keepalive_count = 3;
  record->ciphers = g_strdup("aes256-gcm@openssh.com,aes128-ctr");
  record->description = g_strdup(" build farm; \\ caf\xc3\xa9 ");
  record->reconnect = TRUE;
  g_ptr_array_add(record->granted, g_strdup("org.tunnelgate.open"));
  g_ptr_array_add(record->granted, g_strdup("org.tunnelgate.open-remote"));
  return record;
}

static TgPersistRecord *
profile_record(const char *id)
{
  TgPersistRecord *record = tg_persist_record_new();

  record->id = g_strdup(id);
  record->created = 1;
  record->uid = 0;
  record->user = g_strdup("root");
  record->profile = g_strdup("intranet-db");
  g_ptr_array_add(record->forwards, g_strdup("L 127.0.0.1:5432:db:5432"));
  g_ptr_array_add(record->granted, g_strdup("org.tunnelgate.use-profile"));
  return record;
}

static void
assert_strings_equal(GPtrArray *a, GPtrArray *b)
{
  g_assert_cmpuint(a->len, ==, b->len);
  for (guint i = 0; i < a->len; i++)
    g_assert_cmpstr(g_ptr_array_index(a, i), ==, g_ptr_array_index(b, i));
}

static void
assert_records_equal(const TgPersistRecord *a, const TgPersistRecord *b)
{
  g_assert_cmpstr(a->id, ==, b->id);
  g_assert_cmpint(a->created, ==, b->created);
  g_assert_cmpuint(a->uid, ==, b->uid);
  g_assert_cmpstr(a->user, ==, b->user);
  g_assert_cmpstr(a->profile, ==, b->profile);
  g_assert_cmpstr(a->host, ==, b->host);
  g_assert_cmpuint(a->port, ==, b->port);
  g_assert_cmpstr(a->remote_user, ==, b->remote_user);
  assert_strings_equal(a->forwards, b->forwards);
  g_assert_cmpuint(a->listeners->len, ==, b->listeners->len);
  for (guint i = 0; i < a->listeners->len; i++) {
    const TgPersistListener *x = g_ptr_array_index(a->listeners, i);
    const TgPersistListener *y = g_ptr_array_index(b->listeners, i);

    g_assert_cmpuint(x->forward_index, ==, y->forward_index);
    g_assert_cmpstr(x->address, ==, y->address);
    g_assert_cmpuint(x->port, ==, y->port);
  }
  g_assert_cmpstr(a->agent, ==, b->agent);
  g_assert_cmpstr(a->identity, ==, b->identity);
  g_assert_cmpstr(a->host_key, ==, b->host_key);
  g_assert_cmpuint(a->keepalive, ==, b->keepalive);
  g_assert_cmpuint(a->keepalive_count, ==, b->keepalive_count);
  g_assert_cmpstr(a->ciphers, ==, b->ciphers);
  g_assert_cmpstr(a->description, ==, b->description);
  g_assert_cmpint(a->reconnect, ==, b->reconnect);
  assert_strings_equal(a->granted, b->granted);
}

static void
test_round_trip(void)
{
  g_autoptr(TgPersistRecord) record = full_record();
  g_autoptr(TgPersistRecord) back = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *data = NULL;
  gsize length = 0;

  g_assert_true(tg_persist_record_check(record, "x", &error));
  g_assert_no_error(error);
  data = tg_persist_record_to_data(record, &length);
  g_assert_cmpstr(data, ==, full_text);
  g_assert_cmpuint(length, ==, strlen(full_text));
  back = tg_persist_record_from_data(data, length,
                                     "/var/lib/tunnelgate/tunnels/12.tunnel", &error);
  g_assert_no_error(error);
  assert_records_equal(record, back);

  /* the identity instead of the agent */
  g_clear_pointer(&record->agent, g_free);
  record->identity = g_strdup("/home/alice/.ssh/id;ed25519");
  g_clear_pointer(&data, g_free);
  g_clear_pointer(&back, tg_persist_record_free);
  data = tg_persist_record_to_data(record, &length);
  back = tg_persist_record_from_data(data, length, "12.tunnel", &error);
  g_assert_no_error(error);
  assert_records_equal(record, back);
}

/* Optional keys take their defaults; forwards come back canonical. */
static void
test_minimal_and_canonical(void)
{
  static const char text[] = "[Tunnel]\n"
                             "id=7\n"
                             "created=0\n"
                             "uid=4294967294\n"
                             "user=svc\n"
                             "host=2001:db8::1\n"
                             "port=22\n"
                             "remote-user=svc\n"
                             "forwards=L 08080:intra:0080\n"
                             "identity=/etc/k\n";
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPersistRecord) record =
      tg_persist_record_from_data(text, strlen(text), "7.tunnel", &error);

  g_assert_no_error(error);
  g_assert_cmpstr(record->id, ==, "7");
  g_assert_cmpint(record->created, ==, 0);
  g_assert_cmpuint(record->uid, ==, 4294967294u);
  g_assert_cmpstr(record->host, ==, "2001:db8::1");
  g_assert_cmpuint(record->forwards->len, ==, 1);
  g_assert_cmpstr(g_ptr_array_index(record->forwards, 0), ==, "L 8080:intra:80");
  g_assert_cmpuint(record->listeners->len, ==, 0);
  g_assert_null(record->agent);
  g_assert_cmpstr(record->identity, ==, "/etc/k");
  g_assert_null(record->host_key);
  g_assert_cmpuint(record->keepalive, ==, 0);
  g_assert_cmpuint(record->keepalive_count, ==, 0);
  g_assert_null(record->ciphers);
  g_assert_null(record->description);
  g_assert_false(record->reconnect);
  g_assert_cmpuint(record->granted->len, ==, 0);
}

static void
test_profile_record(void)
{
  g_autoptr(TgPersistRecord) record = profile_record("3");
  g_autoptr(TgPersistRecord) back = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *data = NULL;
  gsize length = 0;

  record->description = g_strdup("DBA access");
  record->keepalive = 60;
  record->reconnect = TRUE;
  data = tg_persist_record_to_data(record, &length);
  g_assert_null(strstr(data, "host="));
  g_assert_null(strstr(data, "port="));
  g_assert_null(strstr(data, "agent="));
  g_assert_nonnull(strstr(data, "\nprofile=intranet-db\n"));
  back = tg_persist_record_from_data(data, length, "3.tunnel", &error);
  g_assert_no_error(error);
  assert_records_equal(record, back);
}

typedef struct {
  const char *from;    /* replaced in full_text (first occurrence)... */
  const char *to;      /* ...by this */
  const char *message; /* ending in '*': GLib's words follow (any language) */
} BadText;

static void
test_bad_text(void)
{
  static const BadText cases[] = {
    /* layout */
    { "[Tunnel]\n", "[Tunnel]\nfuture=1\n",
      "12.tunnel: unknown key 'future' (written by a newer version of tunnelgate?)" },
    { "reconnect=true\n", "reconnect=true\n[Extra]\na=b\n",
      "12.tunnel: unknown group [Extra] (written by a newer version of tunnelgate?)" },
    { "user=alice\n", "user=alice\nuser=bob\n", "12.tunnel: key 'user' is given twice" },
    { "[Tunnel]\n", "[Tunnel\n", "12.tunnel: not a key file: *" },
    { "uid=1000\n", "uid 1000\n", "12.tunnel: not a key file: *" },
    /* id */
    { "id=12\n", "", "12.tunnel: id is required" },
    { "id=12\n", "id=012\n",
      "12.tunnel: id '012' is not a tunnel id (1 to 20 digits, not starting with 0)" },
    { "id=12\n", "id=1a\n",
      "12.tunnel: id '1a' is not a tunnel id (1 to 20 digits, not starting with 0)" },
    { "id=12\n", "id=18446744073709551616\n",
      "12.tunnel: id '18446744073709551616' is not a tunnel id (1 to 20 digits, not "
      "starting with 0)" },
    { "id=12\n", "id=13\n",
      "12.tunnel: id 13 does not match the file name (expected 13.tunnel)" },
    /* owner */
    { "created=1700000000123456\n", "created=-1\n",
      "12.tunnel: created '-1' is not a number from 0 to 9223372036854775807" },
    { "uid=1000\n", "uid=4294967295\n",
      "12.tunnel: uid '4294967295' is not a number from 0 to 4294967294" },
    { "uid=1000\n", "uid=1000 \n",
      "12.tunnel: uid '1000 ' is not a number from 0 to 4294967294" },
    { "uid=1000\n", "", "12.tunnel: uid is required" },
    { "user=alice\n", "user=-alice\n",
      "12.tunnel: user '-alice' is not a user name (1 to 255 bytes, no control "
      "characters, ':', '/' or blanks, not starting with '-')" },
    { "user=alice\n", "user=a\\nb\n",
      "12.tunnel: user 'a\\u000ab' is not a user name (1 to 255 bytes, no control "
      "characters, ':', '/' or blanks, not starting with '-')" },
    { "user=alice\n", "user=\xff\n", "12.tunnel: user: *" },
    /* server */
    { "host=gw.corp.example.com\n", "", "12.tunnel: host is required without profile" },
    { "port=2222\n", "", "12.tunnel: port is required without profile" },
    { "remote-user=alice.admin\n", "",
      "12.tunnel: remote-user is required without profile" },
    { "host=gw.corp.example.com\n", "host=gw corp\n",
      "12.tunnel: host 'gw corp': only letters, digits, '.', '_' and '-' are "
      "allowed" },
    { "host=gw.corp.example.com\n", "host=\n",
      "12.tunnel: host '' is empty or has control characters" },
    { "port=2222\n", "port=0\n", "12.tunnel: port 0 is out of range (1 to 65535)" },
    { "port=2222\n", "port=65536\n",
      "12.tunnel: port '65536' is not a number from 0 to 65535" },
    { "remote-user=alice.admin\n", "remote-user=-oProxyCommand=x\n",
      "12.tunnel: remote-user '-oProxyCommand=x' is not a login name (1 to 32 of A-Z "
      "a-z 0-9 . _ -, not starting with '-')" },
    { "remote-user=alice.admin\n", "remote-user=a@b\n",
      "12.tunnel: remote-user 'a@b' is not a login name (1 to 32 of A-Z a-z 0-9 . _ -, "
      "not starting with '-')" },
    /* profile */
    { "user=alice\n", "user=alice\nprofile=db\n",
      "12.tunnel: host cannot go with profile (the profile has it)" },
    { "user=alice\n", "user=alice\nprofile=../db\n",
      "12.tunnel: profile '../db' is not a profile name (1 to 64 of A-Z a-z 0-9 . _ -, "
      "not starting with '.' or '-')" },
    /* forwards */
    { "forwards=L 127.0.0.1:8080:intra:80;D 0;R 9000:localhost:22;\n", "",
      "12.tunnel: forwards is required" },
    { "forwards=L 127.0.0.1:8080:intra:80;D 0;R 9000:localhost:22;\n"
      "listeners=0 127.0.0.1 8080;1 127.0.0.1 40123;1 ::1 40123;\n",
      "forwards=\n", "12.tunnel: forwards is empty (a tunnel has at least one)" },
    { "D 0;", "X 1:a:2;",
      "12.tunnel: forward 1: forward 'X 1:a:2': unknown kind 'X' (expected L, R or D)" },
    /* listeners */
    { "0 127.0.0.1 8080;", "0 127.0.0.1;",
      "12.tunnel: listener 0 '0 127.0.0.1' is not 'FORWARD ADDRESS PORT'" },
    { "0 127.0.0.1 8080;", "0  127.0.0.1 8080;",
      "12.tunnel: listener 0 '0  127.0.0.1 8080' is not 'FORWARD ADDRESS PORT'" },
    { "0 127.0.0.1 8080;", "3 127.0.0.1 8080;",
      "12.tunnel: listener 0: forward 3 is beyond the 3 forwards" },
    { "0 127.0.0.1 8080;", "2 127.0.0.1 9000;",
      "12.tunnel: listener 0: forward 2 ('R 9000:localhost:22') has no local TCP "
      "listener" },
    { "0 127.0.0.1 8080;", "0 localhost 8080;",
      "12.tunnel: listener 0: address 'localhost' is not a numeric IPv4 or IPv6 "
      "address" },
    { "0 127.0.0.1 8080;", "0 127.0.0.1 0;",
      "12.tunnel: listener 0: port 0 is out of range (1 to 65535)" },
    { "0 127.0.0.1 8080;", "0 127.0.0.1 8081;",
      "12.tunnel: listener 0: port 8081 is not the port of forward 0 "
      "('L 127.0.0.1:8080:intra:80')" },
    { "1 ::1 40123;", "1 127.0.0.1 40123;",
      "12.tunnel: listener 2: address 127.0.0.1 port 40123 is also listener 1" },
    { "1 ::1 40123;", "1 ::1 40123;1 0.0.0.0 40123;",
      "12.tunnel: listener 3: more than 2 listeners for forward 1" },
    /* credentials */
    { "agent=/run/user/1000/ssh-agent.socket\n", "",
      "12.tunnel: agent or identity is required without profile" },
    { "agent=/run/user/1000/ssh-agent.socket\n",
      "agent=/run/user/1000/ssh-agent.socket\nidentity=/k\n",
      "12.tunnel: agent and identity are both given (at most one)" },
    { "agent=/run/user/1000/ssh-agent.socket\n", "agent=run/agent\n",
      "12.tunnel: agent 'run/agent' is not an absolute path" },
    { "agent=/run/user/1000/ssh-agent.socket\n", "identity=/a\\tb\n",
      "12.tunnel: identity '/a\\u0009b' has control characters" },
    /* settings */
    { "host-key=" FINGERPRINT "\n", "host-key=MD5:aa\n",
      "12.tunnel: host-key 'MD5:aa' is not SHA256: and 43 base64 characters" },
    { "keepalive=30\n", "keepalive=3601\n",
      "12.tunnel: keepalive 3601 is more than 3600 seconds" },
    { "keepalive-count=3\n", "keepalive-count=101\n",
      "12.tunnel: keepalive-count 101 is more than 100" },
    { "keepalive-count=3\n", "keepalive-count=+3\n",
      "12.tunnel: keepalive-count '+3' is not a number from 0 to 4294967295" },
    { "ciphers=aes256-gcm@openssh.com,aes128-ctr\n", "ciphers=aes128-ctr,,x\n",
      "12.tunnel: ciphers 'aes128-ctr,,x' is not a comma list of cipher names (A-Z a-z "
      "0-9 @ . _ -, at most 512 bytes)" },
    { "ciphers=aes256-gcm@openssh.com,aes128-ctr\n", "ciphers=a b\n",
      "12.tunnel: ciphers 'a b' is not a comma list of cipher names (A-Z a-z 0-9 @ . _ "
      "-, at most 512 bytes)" },
    { "description=\\sbuild farm; \\\\ caf\xc3\xa9 \n", "description=a\\nb\n",
      "12.tunnel: description has control characters" },
    { "reconnect=true\n", "reconnect=yes\n",
      "12.tunnel: reconnect 'yes' is not true or false" },
    { "org.tunnelgate.open-remote;", "org.tunnelgate.admin;",
      "12.tunnel: granted 'org.tunnelgate.admin' is not a tunnelgate polkit action" },
    { "org.tunnelgate.open-remote;", "org.tunnelgate.open;",
      "12.tunnel: granted 'org.tunnelgate.open' is given twice" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GString) text = g_string_new(full_text);
    g_autoptr(GError) error = NULL;
    g_autoptr(TgPersistRecord) record = NULL;

    g_test_message("%s", cases[i].message);
    g_assert_cmpuint(g_string_replace(text, cases[i].from, cases[i].to, 1), ==, 1);
    record = tg_persist_record_from_data(text->str, text->len, "12.tunnel", &error);
    g_assert_null(record);
    g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
    if (g_str_has_suffix(cases[i].message, "*")) {
      g_autofree char *prefix = g_strndup(cases[i].message, strlen(cases[i].message) - 1);

      g_assert_true(g_str_has_prefix(error->message, prefix));
      g_assert_cmpuint(strlen(error->message), >, strlen(prefix));
    } else {
      g_assert_cmpstr(error->message, ==, cases[i].message);
    }
  }
}

/* Limits that need long text, and the profile's exclusions one by one. */
static void
test_bad_records(void)
{
  g_autofree char *long_description = g_strnfill(257, 'd');
  g_autofree char *long_path = g_strnfill(4096, 'p');
  g_autoptr(GError) error = NULL;
  static const char *const profile_keys[] = { "host",  "port",     "remote-user",
                                              "agent", "identity", "host-key" };

  for (gsize i = 0; i < G_N_ELEMENTS(profile_keys); i++) {
    g_autoptr(TgPersistRecord) record = profile_record("3");
    g_autofree char *expected = g_strdup_printf(
        "x: %s cannot go with profile (the profile has it)", profile_keys[i]);

    switch (i) {
    case 0:
      record->host = g_strdup("h");
      break;
    case 1:
      record->port = 22;
      break;
    case 2:
      record->remote_user = g_strdup("u");
      break;
    case 3:
      record->agent = g_strdup("/a");
      break;
    case 4:
      record->identity = g_strdup("/i");
      break;
    default:
      record->host_key = g_strdup(FINGERPRINT);
      break;
    }
    g_assert_false(tg_persist_record_check(record, "x", &error));
    g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
    g_assert_cmpstr(error->message, ==, expected);
    g_clear_error(&error);
  }

  {
    g_autoptr(TgPersistRecord) record = full_record();

    g_free(record->description);
    record->description = g_steal_pointer(&long_description);
    g_assert_false(tg_persist_record_check(record, "x", &error));
    g_assert_cmpstr(error->message, ==, "x: description is longer than 256 bytes");
    g_clear_error(&error);
  }
  {
    g_autoptr(TgPersistRecord) record = full_record();

    long_path[0] = '/';
    g_free(record->agent);
    record->agent = g_strdup(long_path);
    g_assert_false(tg_persist_record_check(record, "x", &error));
    g_assert_true(g_str_has_suffix(error->message, "is longer than 4095 bytes"));
    g_clear_error(&error);
    long_path[4095] = '\0';
    g_free(record->agent);
    record->agent = g_strdup(long_path);
    g_assert_true(tg_persist_record_check(record, "x", NULL));
  }
  {
    g_autoptr(TgPersistRecord) record = full_record();

    for (guint i = 0; i < 30; i++)
      g_ptr_array_add(record->forwards, g_strdup_printf("L %u:h:80", 10000 + i));
    g_assert_false(tg_persist_record_check(record, "x", &error));
    g_assert_cmpstr(error->message, ==, "x: 33 forwards, more than 32");
    g_clear_error(&error);
  }
  {
    g_autoptr(TgPersistRecord) record = full_record();

    record->uid = (uid_t)-1;
    g_assert_false(tg_persist_record_check(record, "x", &error));
    g_assert_cmpstr(error->message, ==,
                    "x: uid 4294967295 is not a uid (0 to 4294967294)");
    g_clear_error(&error);
  }
  {
    g_autoptr(TgPersistRecord) record = full_record();

    g_clear_pointer(&record->id, g_free);
    g_assert_false(tg_persist_record_check(record, "x", &error));
    g_assert_cmpstr(error->message, ==,
                    "x: id '' is not a tunnel id (1 to 20 digits, not starting with 0)");
    g_clear_error(&error);
  }
  {
    static const char nul[] = "[Tunnel]\nid=1\0\n";

    g_assert_null(tg_persist_record_from_data(nul, sizeof nul - 1, "1.tunnel", &error));
    g_assert_cmpstr(error->message, ==, "1.tunnel: NUL byte at 13");
    g_clear_error(&error);
  }
}

static void
test_ids(void)
{
  static const char *const good[] = { "1", "9", "10", "18446744073709551615" };
  static const char *const bad[] = { "",
                                     "0",
                                     "01",
                                     "-1",
                                     "+1",
                                     " 1",
                                     "1a",
                                     "1.",
                                     "18446744073709551616",
                                     "123456789012345678901" };

  for (gsize i = 0; i < G_N_ELEMENTS(good); i++)
    g_assert_true(tg_persist_id_is_valid(good[i]));
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++)
    g_assert_false(tg_persist_id_is_valid(bad[i]));
  g_assert_false(tg_persist_id_is_valid(NULL));
}

/* ---- Files -------------------------------------------------------------- */

static gint
compare_strings(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static char **
list_dir(const char *path)
{
  g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
  g_autoptr(GPtrArray) names = g_ptr_array_new();
  const char *name;

  g_assert_nonnull(dir);
  while ((name = g_dir_read_name(dir)) != NULL)
    g_ptr_array_add(names, g_strdup(name));
  g_ptr_array_sort(names, compare_strings);
  g_ptr_array_add(names, NULL);
  return (char **)g_ptr_array_free(g_steal_pointer(&names), FALSE);
}

static guint
mode_of(const char *path)
{
  struct stat info;

  g_assert_cmpint(lstat(path, &info), ==, 0);
  return info.st_mode & 07777;
}

static void
write_file(const char *dir, const char *name, const char *data, gssize length, int mode)
{
  g_autofree char *path = g_build_filename(dir, name, NULL);

  g_assert_true(g_file_set_contents(path, data, length, NULL));
  g_assert_cmpint(g_chmod(path, mode), ==, 0);
}

static void
test_save_and_remove(void)
{
  g_autofree char *top = g_dir_make_tmp("tg-persist-XXXXXX", NULL);
  g_autofree char *state = g_build_filename(top, "state", NULL);
  g_autofree char *dir = tg_persist_dir(state);
  g_autofree char *path = g_build_filename(dir, "12.tunnel", NULL);
  g_autofree char *data = NULL;
  g_autoptr(TgPersistRecord) record = full_record();
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) names = NULL;
  gsize length = 0;

  g_assert_true(g_str_has_suffix(dir, "/state/tunnels"));
  /* the state directory and the tunnels directory are created 0700 */
  g_assert_true(tg_persist_save(dir, record, &error));
  g_assert_no_error(error);
  g_assert_cmpuint(mode_of(dir), ==, 0700);
  g_assert_cmpuint(mode_of(path), ==, 0600);
  names = list_dir(dir);
  g_assert_cmpuint(g_strv_length(names), ==, 1); /* no temporary file left */
  g_assert_cmpstr(names[0], ==, "12.tunnel");
  g_assert_true(g_file_get_contents(path, &data, &length, NULL));
  g_assert_cmpstr(data, ==, full_text);

  /* replaced as a whole, mode kept at 0600; the directory is made private */
  g_assert_cmpint(g_chmod(path, 0644), ==, 0);
  g_assert_cmpint(g_chmod(dir, 0755), ==, 0);
  record->keepalive = 45;
  g_assert_true(tg_persist_save(dir, record, &error));
  g_assert_cmpuint(mode_of(dir), ==, 0700);
  g_assert_cmpuint(mode_of(path), ==, 0600);
  g_clear_pointer(&names, g_strfreev);
  names = list_dir(dir);
  g_assert_cmpuint(g_strv_length(names), ==, 1);
  g_clear_pointer(&data, g_free);
  g_assert_true(g_file_get_contents(path, &data, &length, NULL));
  g_assert_nonnull(strstr(data, "\nkeepalive=45\n"));

  /* a record loading would skip is not written, the old file stays */
  record->port = 0;
  g_assert_false(tg_persist_save(dir, record, &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_assert_true(
      g_str_has_suffix(error->message, "12.tunnel: port is required without profile"));
  g_clear_error(&error);
  g_clear_pointer(&record->id, g_free);
  record->id = g_strdup("../12");
  g_assert_false(tg_persist_save(dir, record, &error));
  g_assert_cmpstr(error->message, ==,
                  "tunnel: id '../12' is not a tunnel id (1 to 20 digits, not starting "
                  "with 0)");
  g_clear_error(&error);
  g_assert_true(g_file_test(path, G_FILE_TEST_IS_REGULAR));

  /* remove: present, absent, not an id */
  g_assert_true(tg_persist_remove(dir, "12", &error));
  g_assert_no_error(error);
  g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
  g_assert_true(tg_persist_remove(dir, "12", &error));
  g_assert_no_error(error);
  g_assert_true(tg_persist_remove(dir, "99", &error));
  g_assert_no_error(error);
  g_assert_false(tg_persist_remove(dir, "../x", &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_assert_cmpstr(error->message, ==,
                  "'../x' is not a tunnel id (1 to 20 digits, not starting with 0)");
  g_clear_error(&error);
  tg_test_remove_tree(top);
}

static void
test_load_all(void)
{
  g_autofree char *top = g_dir_make_tmp("tg-persist-XXXXXX", NULL);
  g_autofree char *dir = tg_persist_dir(top);
  g_autofree char *elsewhere = g_build_filename(top, "elsewhere.tunnel", NULL);
  g_autofree char *link = g_build_filename(dir, "20.tunnel", NULL);
  g_autofree char *subdir = g_build_filename(dir, "21.tunnel", NULL);
  g_autofree char *big = g_malloc(TG_PERSIST_MAX_FILE_SIZE + 2);
  g_autoptr(GPtrArray) records = NULL;
  g_autoptr(GPtrArray) problems = NULL;
  g_autoptr(GPtrArray) expected = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GString) mismatched = g_string_new(full_text);
  static const char *const ids[] = { "10", "9", "100", "2" };

  for (gsize i = 0; i < G_N_ELEMENTS(ids); i++) {
    g_autoptr(TgPersistRecord) record = profile_record(ids[i]);

    g_assert_true(tg_persist_save(dir, record, NULL));
  }
  /* corrupt, misnamed, mismatched */
  write_file(dir, "30.tunnel", "[Tunnel]\nid=30\n", -1, 0600);
  g_ptr_array_add(expected, g_strdup_printf("%s/30.tunnel: created is required", dir));
  write_file(dir, "31.tunnel", "[Tunnel]\nid=31\0\x01\x02", 17, 0600);
  g_ptr_array_add(expected, g_strdup_printf("%s/31.tunnel: NUL byte at 14", dir));
  g_string_replace(mismatched, "id=12\n", "id=32\n", 1);
  write_file(dir, "33.tunnel", mismatched->str, -1, 0600);
  g_ptr_array_add(
      expected,
      g_strdup_printf("%s/33.tunnel: id 32 does not match the file name (expected "
                      "32.tunnel)",
                      dir));
  write_file(dir, "034.tunnel", full_text, -1, 0600);
  g_ptr_array_add(expected,
                  g_strdup_printf("%s/034.tunnel: not named ID.tunnel (ID: 1 to "
                                  "20 digits, not starting with 0)",
                                  dir));
  write_file(dir, "12.tunnel.ABC123", full_text, -1, 0600);
  g_ptr_array_add(expected,
                  g_strdup_printf("%s/12.tunnel.ABC123: not named ID.tunnel (ID: 1 to "
                                  "20 digits, not starting with 0)",
                                  dir));
  /* wrong mode, too large, a link, a directory */
  g_string_replace(mismatched, "id=32\n", "id=35\n", 1);
  write_file(dir, "35.tunnel", mismatched->str, -1, 0620);
  g_ptr_array_add(expected, g_strdup_printf("%s/35.tunnel: writable by group or others "
                                            "(mode 0620)",
                                            dir));
  g_string_replace(mismatched, "id=35\n", "id=36\n", 1);
  write_file(dir, "36.tunnel", mismatched->str, -1, 0602);
  g_ptr_array_add(expected, g_strdup_printf("%s/36.tunnel: writable by group or others "
                                            "(mode 0602)",
                                            dir));
  memset(big, '#', TG_PERSIST_MAX_FILE_SIZE + 1);
  big[TG_PERSIST_MAX_FILE_SIZE + 1] = '\0';
  write_file(dir, "37.tunnel", big, -1, 0600);
  g_ptr_array_add(expected,
                  g_strdup_printf("%s/37.tunnel: larger than 65536 bytes", dir));
  big[TG_PERSIST_MAX_FILE_SIZE] = '\0'; /* at the limit: read, then invalid */
  write_file(dir, "38.tunnel", big, -1, 0600);
  g_ptr_array_add(expected, g_strdup_printf("%s/38.tunnel: no [Tunnel] group", dir));
  write_file(top, "elsewhere.tunnel", full_text, -1, 0600);
  g_assert_cmpint(symlink(elsewhere, link), ==, 0);
  g_ptr_array_add(expected, g_strdup_printf("%s/20.tunnel: a symbolic link", dir));
  g_assert_cmpint(g_mkdir(subdir, 0700), ==, 0);
  g_ptr_array_add(expected, g_strdup_printf("%s/21.tunnel: not a regular file", dir));
  if (geteuid() == 0) {
    g_autofree char *other = g_build_filename(dir, "39.tunnel", NULL);

    g_string_replace(mismatched, "id=36\n", "id=39\n", 1);
    write_file(dir, "39.tunnel", mismatched->str, -1, 0600);
    g_assert_cmpint(chown(other, 1, 1), ==, 0);
    g_ptr_array_add(expected,
                    g_strdup_printf("%s/39.tunnel: owned by uid 1, not 0", dir));
  }
  g_ptr_array_sort(expected, compare_strings);

  records = tg_persist_load_all(dir, &problems);
  g_assert_cmpuint(records->len, ==, 4);
  g_assert_cmpstr(((TgPersistRecord *)records->pdata[0])->id, ==, "2");
  g_assert_cmpstr(((TgPersistRecord *)records->pdata[1])->id, ==, "9");
  g_assert_cmpstr(((TgPersistRecord *)records->pdata[2])->id, ==, "10");
  g_assert_cmpstr(((TgPersistRecord *)records->pdata[3])->id, ==, "100");
  for (guint i = 0; i < problems->len; i++)
    g_test_message("%s", (const char *)problems->pdata[i]);
  assert_strings_equal(problems, expected);
  tg_test_remove_tree(top);
}

static void
test_load_dir(void)
{
  g_autofree char *top = g_dir_make_tmp("tg-persist-XXXXXX", NULL);
  g_autofree char *dir = tg_persist_dir(top);
  g_autofree char *link = g_build_filename(top, "link", NULL);
  g_autofree char *message = NULL;
  g_autoptr(GPtrArray) records = NULL;
  g_autoptr(GPtrArray) problems = NULL;
  g_autoptr(TgPersistRecord) record = profile_record("1");

  /* none yet: nothing, and nothing wrong */
  records = tg_persist_load_all(dir, &problems);
  g_assert_cmpuint(records->len, ==, 0);
  g_assert_cmpuint(problems->len, ==, 0);
  g_clear_pointer(&records, g_ptr_array_unref);
  g_clear_pointer(&problems, g_ptr_array_unref);

  g_assert_true(tg_persist_save(dir, record, NULL));
  records = tg_persist_load_all(dir, &problems);
  g_assert_cmpuint(records->len, ==, 1);
  g_assert_cmpuint(problems->len, ==, 0);
  g_clear_pointer(&records, g_ptr_array_unref);
  g_clear_pointer(&problems, g_ptr_array_unref);

  /* a directory others may write to is not trusted at all */
  g_assert_cmpint(g_chmod(dir, 0777), ==, 0);
  records = tg_persist_load_all(dir, &problems);
  g_assert_cmpuint(records->len, ==, 0);
  g_assert_cmpuint(problems->len, ==, 1);
  message = g_strdup_printf("%s: not owned by uid %u or writable by group or others; no "
                            "tunnel restored",
                            dir, (guint)geteuid());
  g_assert_cmpstr(problems->pdata[0], ==, message);
  g_clear_pointer(&records, g_ptr_array_unref);
  g_clear_pointer(&problems, g_ptr_array_unref);
  g_clear_pointer(&message, g_free);
  g_assert_cmpint(g_chmod(dir, 0700), ==, 0);

  /* nor a link to one */
  g_assert_cmpint(symlink(dir, link), ==, 0);
  records = tg_persist_load_all(link, &problems);
  g_assert_cmpuint(records->len, ==, 0);
  g_assert_cmpuint(problems->len, ==, 1);
  message = g_strdup_printf("%s: a symbolic link; no tunnel restored", link);
  g_assert_cmpstr(problems->pdata[0], ==, message);
  tg_test_remove_tree(top);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/persist/round-trip", test_round_trip);
  g_test_add_func("/persist/minimal-and-canonical", test_minimal_and_canonical);
  g_test_add_func("/persist/profile-record", test_profile_record);
  g_test_add_func("/persist/bad-text", test_bad_text);
  g_test_add_func("/persist/bad-records", test_bad_records);
  g_test_add_func("/persist/ids", test_ids);
  g_test_add_func("/persist/save-and-remove", test_save_and_remove);
  g_test_add_func("/persist/load-all", test_load_all);
  g_test_add_func("/persist/load-dir", test_load_dir);
  return g_test_run();
}
