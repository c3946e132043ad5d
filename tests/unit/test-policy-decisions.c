/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for policy.c: every kind of forward through
 * tg_policy_check_forward(), servers, SOCKS requests, limits, Match User and
 * Group, the effective dump, and concurrent readers. Each expected answer
 * names the exact file:line that decides it. */
#include <string.h>
#include <sys/socket.h>

#include "policy-match.h"
#include "policy.h"
#include "tg-error.h"

/* Line numbers matter: the expected reasons below name them. */
static const char policy_text[] =
    "# decisions test policy\n"                            /* 1 */
    "AllowTcpForwarding local\n"                           /* 2 */
    "AllowStreamLocalForwarding no\n"                      /* 3 */
    "GatewayPorts no\n"                                    /* 4 */
    "PermitOpen db.corp:5432 *.web.corp:443\n"             /* 5 */
    "PermitOpen 10.0.0.0/8:22 [2001:db8::]/32:8000-8999\n" /* 6 */
    "PermitListen localhost:8080 9000-9100\n"              /* 7 */
    "PermitRemoteOpen localhost:80\n"                      /* 8 */
    "PermitServer gw.corp:22 10.9.0.0/16\n"                /* 9 */
    "AllowDynamicForwarding no\n"                          /* 10 */
    "MaxTunnels 2\n"                                       /* 11 */
    "\n"                                                   /* 12 */
    "Match Group dba,!contractors\n"                       /* 13 */
    "  AllowTcpForwarding yes\n"                           /* 14 */
    "  AllowStreamLocalForwarding local\n"                 /* 15 */
    "  AllowDynamicForwarding yes\n"                       /* 16 */
    "  GatewayPorts clientspecified\n"                     /* 17 */
    "  PermitOpen any\n"                                   /* 18 */
    "Match User carol\n"                                   /* 19 */
    "  GatewayPorts yes\n"                                 /* 20 */
    "  PermitListen 0 *:7000\n"                            /* 21 */
    "Match User bob\n"                                     /* 22 */
    "  AllowTcpForwarding remote\n"                        /* 23 */
    "  MaxConnections 5\n";                                /* 24 */

typedef struct {
  TgPolicy *policy;
  TgPolicySubject *alice; /* groups: alice, dev */
  TgPolicySubject *bob;   /* groups: bob, dba, contractors */
  TgPolicySubject *carol; /* groups: carol, dba */
} Fixture;

static void
fixture_setup(Fixture *fixture, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  const char *alice_groups[] = { "alice", "dev", NULL };
  const char *bob_groups[] = { "bob", "dba", "contractors", NULL };
  const char *carol_groups[] = { "carol", "dba", NULL };

  fixture->policy = tg_policy_parse_string("t.conf", policy_text, -1, &error);
  g_assert_no_error(error);
  fixture->alice = tg_policy_subject_new("alice", 1000, alice_groups);
  fixture->bob = tg_policy_subject_new("bob", 1001, bob_groups);
  fixture->carol = tg_policy_subject_new("carol", 1002, carol_groups);
}

static void
fixture_teardown(Fixture *fixture, gconstpointer data)
{
  tg_policy_unref(fixture->policy);
  tg_policy_subject_free(fixture->alice);
  tg_policy_subject_free(fixture->bob);
  tg_policy_subject_free(fixture->carol);
}

static const TgPolicySubject *
subject_named(const Fixture *fixture, const char *name)
{
  if (name == NULL)
    return NULL;
  if (g_str_equal(name, "alice"))
    return fixture->alice;
  if (g_str_equal(name, "bob"))
    return fixture->bob;
  g_assert_cmpstr(name, ==, "carol");
  return fixture->carol;
}

/* "PermitOpen at t.conf:5 allows ..." -> keyword and line. */
static void
assert_decision(const TgPolicyDecision *decision, gboolean allowed, const char *reason)
{
  g_autofree char *keyword = g_strndup(reason, strcspn(reason, " "));
  const char *at = strstr(reason, " at ");
  guint line = 0;

  g_assert_nonnull(decision);
  g_assert_cmpstr(decision->reason, ==, reason);
  g_assert_cmpint(decision->allowed, ==, allowed);
  g_assert_cmpstr(decision->keyword, ==, keyword);
  g_assert_nonnull(at);
  if (g_str_has_prefix(at, " at t.conf:")) {
    line = (guint)g_ascii_strtoull(at + strlen(" at t.conf:"), NULL, 10);
    g_assert_cmpstr(decision->file, ==, "t.conf");
  } else {
    g_assert_true(g_str_has_prefix(at, " at <default> "));
    g_assert_cmpstr(decision->file, ==, "<default>");
  }
  g_assert_cmpuint(decision->line, ==, line);
}

typedef struct {
  const char *subject;
  const char *forward;
  gboolean allowed;
  const char *reason;
} ForwardCase;

static void
check_forward_cases(const Fixture *fixture, const ForwardCase *cases, gsize n_cases)
{
  for (gsize i = 0; i < n_cases; i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(TgForward) forward = tg_forward_parse(cases[i].forward, &error);
    g_autoptr(TgPolicyDecision) decision = NULL;

    g_test_message("%s: %s", cases[i].subject ? cases[i].subject : "(nobody)",
                   cases[i].forward);
    g_assert_no_error(error);
    decision = tg_policy_check_forward(fixture->policy,
                                       subject_named(fixture, cases[i].subject), forward);
    assert_decision(decision, cases[i].allowed, cases[i].reason);
  }
}

/* ---- Forwards -------------------------------------------------------------- */

static void
test_local_forwards(Fixture *fixture, gconstpointer data)
{
  static const ForwardCase cases[] = {
    { "alice", "L 8080:db.corp:5432", TRUE,
      "PermitOpen at t.conf:5 allows db.corp:5432" },
    { "alice", "L 8080:DB.Corp.:5432", TRUE,
      "PermitOpen at t.conf:5 allows DB.Corp.:5432" },
    { "alice", "L 8080:db.corp:5433", FALSE,
      "PermitOpen at t.conf:5 does not allow db.corp:5433" },
    { "alice", "L 8080:a.b.web.corp:443", TRUE,
      "PermitOpen at t.conf:5 allows a.b.web.corp:443" },
    { "alice", "L 8080:web.corp:443", FALSE,
      "PermitOpen at t.conf:5 does not allow web.corp:443" },
    { "alice", "L 8080:10.1.2.3:22", TRUE, "PermitOpen at t.conf:6 allows 10.1.2.3:22" },
    { "alice", "L 8080:[2001:db8::7]:8080", TRUE,
      "PermitOpen at t.conf:6 allows [2001:db8::7]:8080" },
    { "alice", "L 8080:[2001:db9::7]:8080", FALSE,
      "PermitOpen at t.conf:5 does not allow [2001:db9::7]:8080" },
    /* a name never matches a network, an address never a name */
    { "alice", "L 8080:ten.corp:22", FALSE,
      "PermitOpen at t.conf:5 does not allow ten.corp:22" },
    /* GatewayPorts no: loopback listeners only */
    { "alice", "L 127.0.0.1:8080:db.corp:5432", TRUE,
      "PermitOpen at t.conf:5 allows db.corp:5432" },
    { "alice", "L [::1]:8080:db.corp:5432", TRUE,
      "PermitOpen at t.conf:5 allows db.corp:5432" },
    { "alice", "L localhost:8080:db.corp:5432", TRUE,
      "PermitOpen at t.conf:5 allows db.corp:5432" },
    { "alice", "L 0.0.0.0:8080:db.corp:5432", FALSE,
      "GatewayPorts no at t.conf:4 does not allow L 0.0.0.0:8080:db.corp:5432 (a "
      "listener beyond loopback)" },
    { "alice", "L *:8080:db.corp:5432", FALSE,
      "GatewayPorts no at t.conf:4 does not allow L *:8080:db.corp:5432 (a listener "
      "beyond loopback)" },
    { "alice", "L :8080:db.corp:5432", FALSE,
      "GatewayPorts no at t.conf:4 does not allow L :8080:db.corp:5432 (a listener "
      "beyond loopback)" },
    /* Unix sockets need AllowStreamLocalForwarding */
    { "alice", "L 8080:/run/pg.sock", FALSE,
      "AllowStreamLocalForwarding no at t.conf:3 does not allow L 8080:/run/pg.sock" },
    { "alice", "L /tmp/l.sock:db.corp:5432", FALSE,
      "AllowStreamLocalForwarding no at t.conf:3 does not allow L "
      "/tmp/l.sock:db.corp:5432" },
    /* carol (dba): the first matching block decides each keyword */
    { "carol", "L *:8080:anything:1", TRUE,
      "PermitOpen any at t.conf:18 allows anything:1" },
    { "carol", "L 8080:/run/pg.sock", TRUE,
      "GatewayPorts clientspecified at t.conf:17 allows L 8080:/run/pg.sock" },
    { "carol", "L /tmp/l.sock:db.corp:5432", TRUE,
      "PermitOpen any at t.conf:18 allows db.corp:5432" },
    { "carol", "L /tmp/l.sock:/run/pg.sock", TRUE,
      "AllowStreamLocalForwarding local at t.conf:15 allows L /tmp/l.sock:/run/pg.sock" },
    /* bob is in dba but also in contractors: excluded from that block */
    { "bob", "L 8080:db.corp:5432", FALSE,
      "AllowTcpForwarding remote at t.conf:23 does not allow L 8080:db.corp:5432" },
    /* no subject: global values only */
    { NULL, "L 8080:db.corp:5432", TRUE, "PermitOpen at t.conf:5 allows db.corp:5432" },
  };

  check_forward_cases(fixture, cases, G_N_ELEMENTS(cases));
}

static void
test_remote_forwards(Fixture *fixture, gconstpointer data)
{
  static const ForwardCase cases[] = {
    { "alice", "R 8080:localhost:80", FALSE,
      "AllowTcpForwarding local at t.conf:2 does not allow R 8080:localhost:80" },
    /* bob: AllowTcpForwarding remote; global PermitListen, PermitRemoteOpen */
    { "bob", "R 8080:localhost:80", TRUE,
      "PermitRemoteOpen at t.conf:8 allows localhost:80" },
    { "bob", "R 8080:localhost:81", FALSE,
      "PermitRemoteOpen at t.conf:8 does not allow localhost:81" },
    { "bob", "R 8081:localhost:80", FALSE,
      "PermitListen at t.conf:7 does not allow localhost:8081" },
    /* ssh(1) asks for "localhost" without a bind address: a name, so an
     * address does not match it */
    { "bob", "R 127.0.0.1:8080:localhost:80", FALSE,
      "PermitListen at t.conf:7 does not allow 127.0.0.1:8080" },
    { "bob", "R *:9050:localhost:80", TRUE,
      "PermitRemoteOpen at t.conf:8 allows localhost:80" },
    { "bob", "R :9100:localhost:80", TRUE,
      "PermitRemoteOpen at t.conf:8 allows localhost:80" },
    { "bob", "R *:8080:localhost:80", FALSE,
      "PermitListen at t.conf:7 does not allow *:8080" },
    { "bob", "R 0:localhost:80", FALSE,
      "PermitListen at t.conf:7 does not allow "
      "localhost:0" },
    { "bob", "R 8080:/run/app.sock", FALSE,
      "AllowStreamLocalForwarding no at t.conf:3 does not allow R 8080:/run/app.sock" },
    { "bob", "R 1080", FALSE,
      "AllowDynamicForwarding no at t.conf:10 does not allow R "
      "1080" },
    /* carol: PermitListen 0 *:7000 */
    { "carol", "R 0:localhost:80", TRUE,
      "PermitRemoteOpen at t.conf:8 allows localhost:80" },
    { "carol", "R 0", TRUE, "PermitListen at t.conf:21 allows localhost:0" },
    { "carol", "R 8080:localhost:80", FALSE,
      "PermitListen at t.conf:21 does not allow localhost:8080" },
    { "carol", "R *:7000:localhost:80", TRUE,
      "PermitRemoteOpen at t.conf:8 allows localhost:80" },
    { "carol", "R [2001:db8::1]:7000:[::1]:80", FALSE,
      "PermitRemoteOpen at t.conf:8 does not allow [::1]:80" },
    { "carol", "R 1080", FALSE,
      "PermitListen at t.conf:21 does not allow localhost:1080" },
    { "carol", "R /tmp/r.sock:localhost:80", FALSE,
      "AllowStreamLocalForwarding local at t.conf:15 does not allow R "
      "/tmp/r.sock:localhost:80" },
  };

  check_forward_cases(fixture, cases, G_N_ELEMENTS(cases));
}

static void
test_dynamic_forwards(Fixture *fixture, gconstpointer data)
{
  static const ForwardCase cases[] = {
    { "alice", "D 1080", FALSE,
      "AllowDynamicForwarding no at t.conf:10 does not allow D "
      "1080" },
    { "carol", "D 1080", TRUE,
      "GatewayPorts clientspecified at t.conf:17 allows D 1080" },
    { "carol", "D 0.0.0.0:1080", TRUE,
      "GatewayPorts clientspecified at t.conf:17 allows D 0.0.0.0:1080" },
    { "bob", "D 1080", FALSE,
      "AllowDynamicForwarding no at t.conf:10 does not allow D "
      "1080" },
  };

  check_forward_cases(fixture, cases, G_N_ELEMENTS(cases));
}

/* With nothing configured every default answers, naming <default>. */
static void
test_defaults(void)
{
  g_autoptr(TgPolicy) policy = tg_policy_parse_string("t.conf", "", -1, NULL);
  Fixture fixture = { policy, NULL, NULL, NULL };
  static const ForwardCase cases[] = {
    { NULL, "L 8080:h:80", TRUE, "PermitOpen any at <default> allows h:80" },
    { NULL, "L *:8080:h:80", FALSE,
      "GatewayPorts no at <default> does not allow L *:8080:h:80 (a listener beyond "
      "loopback)" },
    { NULL, "L 8080:/run/s.sock", TRUE,
      "GatewayPorts no at <default> allows L "
      "8080:/run/s.sock" },
    { NULL, "L /tmp/a.sock:/run/s.sock", TRUE,
      "AllowStreamLocalForwarding yes at <default> allows L /tmp/a.sock:/run/s.sock" },
    { NULL, "R 8080:h:80", TRUE, "PermitRemoteOpen any at <default> allows h:80" },
    { NULL, "R 0", TRUE, "PermitListen any at <default> allows localhost:0" },
    { NULL, "R /tmp/r.sock:/run/s.sock", TRUE,
      "AllowStreamLocalForwarding yes at <default> allows R /tmp/r.sock:/run/s.sock" },
    { NULL, "D 1080", TRUE, "GatewayPorts no at <default> allows D 1080" },
    { NULL, "D *:1080", FALSE,
      "GatewayPorts no at <default> does not allow D *:1080 (a "
      "listener beyond loopback)" },
  };

  g_assert_nonnull(policy);
  check_forward_cases(&fixture, cases, G_N_ELEMENTS(cases));
}

/* AllowTcpForwarding and AllowStreamLocalForwarding, every value against
 * every direction and kind of end. */
static void
test_forwarding_values(void)
{
  static const struct {
    const char *tcp;
    const char *stream;
    const char *forward;
    gboolean allowed;
  } cases[] = {
    { "yes", "no", "L 1:h:2", TRUE },      { "all", "no", "R 1:h:2", TRUE },
    { "no", "yes", "L 1:h:2", FALSE },     { "no", "yes", "L /a:/b", TRUE },
    { "local", "no", "L 1:h:2", TRUE },    { "local", "no", "D 1", TRUE },
    { "local", "no", "R 1:h:2", FALSE },   { "remote", "no", "R 1:h:2", TRUE },
    { "remote", "no", "R 1", TRUE },       { "remote", "no", "D 1", FALSE },
    { "yes", "local", "L 1:/b", TRUE },    { "yes", "local", "R 1:/b", FALSE },
    { "yes", "remote", "R /a:h:2", TRUE }, { "no", "yes", "R /a:h:2", FALSE },
    { "no", "yes", "L /a:h:2", FALSE },    { "yes", "no", "L /a:/b", FALSE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *text = g_strdup_printf("AllowTcpForwarding %s\n"
                                            "AllowStreamLocalForwarding %s\n",
                                            cases[i].tcp, cases[i].stream);
    g_autoptr(TgPolicy) policy = tg_policy_parse_string("t.conf", text, -1, NULL);
    g_autoptr(TgForward) forward = tg_forward_parse(cases[i].forward, NULL);
    g_autoptr(TgPolicyDecision) decision = tg_policy_check_forward(policy, NULL, forward);

    g_test_message("%s", decision->reason);
    g_assert_cmpint(decision->allowed, ==, cases[i].allowed);
  }
}

/* ---- Servers, SOCKS, remote dynamic ----------------------------------------- */

typedef struct {
  const char *subject;
  const char *host;
  guint16 port;
  gboolean allowed;
  const char *reason;
} DestinationCase;

typedef TgPolicyDecision *(*DestinationCheck)(const TgPolicy *, const TgPolicySubject *,
                                              const char *, guint16);

static void
check_destination_cases(const Fixture *fixture, DestinationCheck check,
                        const DestinationCase *cases, gsize n_cases)
{
  for (gsize i = 0; i < n_cases; i++) {
    g_autoptr(TgPolicyDecision) decision =
        check(fixture->policy, subject_named(fixture, cases[i].subject), cases[i].host,
              cases[i].port);

    assert_decision(decision, cases[i].allowed, cases[i].reason);
  }
}

static void
test_servers(Fixture *fixture, gconstpointer data)
{
  static const DestinationCase cases[] = {
    { "alice", "gw.corp", 22, TRUE, "PermitServer at t.conf:9 allows gw.corp:22" },
    { "alice", "GW.CORP.", 22, TRUE, "PermitServer at t.conf:9 allows GW.CORP.:22" },
    { "alice", "gw.corp", 2222, FALSE,
      "PermitServer at t.conf:9 does not allow "
      "gw.corp:2222" },
    { "alice", "10.9.3.4", 2222, TRUE, "PermitServer at t.conf:9 allows 10.9.3.4:2222" },
    { "alice", "10.10.3.4", 22, FALSE,
      "PermitServer at t.conf:9 does not allow "
      "10.10.3.4:22" },
    { "alice", "2001:db8::1", 22, FALSE,
      "PermitServer at t.conf:9 does not allow "
      "[2001:db8::1]:22" },
    { "carol", "gw.corp", 22, TRUE, "PermitServer at t.conf:9 allows gw.corp:22" },
  };

  check_destination_cases(fixture, tg_policy_check_server, cases, G_N_ELEMENTS(cases));
}

static void
test_socks_destinations(Fixture *fixture, gconstpointer data)
{
  static const DestinationCase cases[] = {
    { "alice", "db.corp", 5432, TRUE, "PermitOpen at t.conf:5 allows db.corp:5432" },
    { "alice", "x.web.corp", 80, FALSE,
      "PermitOpen at t.conf:5 does not allow "
      "x.web.corp:80" },
    { "alice", "10.200.0.1", 22, TRUE, "PermitOpen at t.conf:6 allows 10.200.0.1:22" },
    { "alice", "::ffff:10.200.0.1", 22, TRUE,
      "PermitOpen at t.conf:6 allows [::ffff:10.200.0.1]:22" },
    /* hosts from the network are escaped in reasons */
    { "alice", "evil\n\xff.corp", 22, FALSE,
      "PermitOpen at t.conf:5 does not allow evil\\u000a\\xff.corp:22" },
    { "carol", "anything", 1, TRUE, "PermitOpen any at t.conf:18 allows anything:1" },
  };

  check_destination_cases(fixture, tg_policy_check_socks_destination, cases,
                          G_N_ELEMENTS(cases));
}

static void
test_remote_open(Fixture *fixture, gconstpointer data)
{
  static const DestinationCase cases[] = {
    { "bob", "localhost", 80, TRUE, "PermitRemoteOpen at t.conf:8 allows localhost:80" },
    { "bob", "127.0.0.1", 80, FALSE,
      "PermitRemoteOpen at t.conf:8 does not allow "
      "127.0.0.1:80" },
  };

  check_destination_cases(fixture, tg_policy_check_remote_open, cases,
                          G_N_ELEMENTS(cases));
}

static void
test_server_permit_open(void)
{
  g_autoptr(TgPolicy) policy =
      tg_policy_parse_string("t.conf",
                             "ServerPermitOpen none\n"
                             "Match Group jump\n"
                             "  ServerPermitOpen a.intra:22\n"
                             "  ServerPermitOpen 10.0.0.0/8:80\n",
                             -1, NULL);
  const char *groups[] = { "u", "jump", NULL };
  g_autoptr(TgPolicySubject) jumper = tg_policy_subject_new("u", 5, groups);
  g_autoptr(TgPolicyDecision) denied =
      tg_policy_check_server_permit_open(policy, NULL, "a.intra", 22);
  g_autoptr(TgPolicyDecision) allowed =
      tg_policy_check_server_permit_open(policy, jumper, "a.intra", 22);
  g_autoptr(TgPolicyDecision) network =
      tg_policy_check_server_permit_open(policy, jumper, "10.1.2.3", 80);
  g_autoptr(TgPolicyDecision) port =
      tg_policy_check_server_permit_open(policy, jumper, "10.1.2.3", 22);
  g_autoptr(TgPolicyDecision) name =
      tg_policy_check_server_permit_open(policy, jumper, "b.intra", 22);

  assert_decision(denied, FALSE,
                  "ServerPermitOpen none at t.conf:1 does not allow "
                  "a.intra:22");
  assert_decision(allowed, TRUE, "ServerPermitOpen at t.conf:3 allows a.intra:22");
  assert_decision(network, TRUE, "ServerPermitOpen at t.conf:4 allows 10.1.2.3:80");
  assert_decision(port, FALSE, "ServerPermitOpen at t.conf:3 does not allow 10.1.2.3:22");
  assert_decision(name, FALSE, "ServerPermitOpen at t.conf:3 does not allow b.intra:22");
}

/* tg_policy_get_server_permit_open(): the list the firewall is built from. */
static void
assert_host_list(const TgPolicyHostList *list, gboolean any, gboolean none,
                 const char *const *entries, const char *file, guint line)
{
  g_assert_cmpint(list->any, ==, any);
  g_assert_cmpint(list->none, ==, none);
  g_assert_cmpstr(list->origin.keyword, ==, "ServerPermitOpen");
  g_assert_cmpstr(list->origin.file, ==, file);
  g_assert_cmpuint(list->origin.line, ==, line);
  if (entries == NULL) {
    g_assert_null(list->entries);
    return;
  }
  g_assert_nonnull(list->entries);
  g_assert_cmpuint(list->entries->len, ==, g_strv_length((char **)entries));
  for (guint i = 0; i < list->entries->len; i++) {
    const TgHostPattern *pattern = g_ptr_array_index(list->entries, i);
    g_autofree char *text = tg_host_pattern_to_string(pattern, TG_PORT_REQUIRED);

    g_assert_cmpstr(text, ==, entries[i]);
  }
}

static void
test_get_server_permit_open(void)
{
  g_autoptr(TgPolicy) policy = tg_policy_parse_string(
      "t.conf",
      "ServerPermitOpen intra.corp:80\n"                                  /* 1 */
      "ServerPermitOpen [2001:db8::]/32:8000-8999 [::ffff:10.1.2.3]:22\n" /* 2 */
      "Match Group contractors\n"                                         /* 3 */
      "  ServerPermitOpen none\n"                                         /* 4 */
      "Match Group jump\n"                                                /* 5 */
      "  ServerPermitOpen 10.20.0.0/16:22\n"                              /* 6 */
      "  ServerPermitOpen DB.Corp.:5432 192.0.2.7:*\n"                    /* 7 */
      "Match User admin\n"                                                /* 8 */
      "  ServerPermitOpen any\n",                                         /* 9 */
      -1, NULL);
  g_autoptr(TgPolicy) empty = tg_policy_parse_string("t.conf", "", -1, NULL);
  const char *jump_groups[] = { "j", "staff", "jump", NULL };
  const char *both_groups[] = { "c", "jump", "contractors", NULL };
  const char *admin_groups[] = { "admin", "jump", NULL };
  g_autoptr(TgPolicySubject) jumper = tg_policy_subject_new("j", 10, jump_groups);
  g_autoptr(TgPolicySubject) contractor = tg_policy_subject_new("c", 11, both_groups);
  g_autoptr(TgPolicySubject) admin = tg_policy_subject_new("admin", 12, admin_groups);
  g_autoptr(TgPolicySubject) other = tg_policy_subject_new("o", 13, NULL);
  static const char *const global[] = { "intra.corp:80", "[2001:db8::]/32:8000-8999",
                                        "10.1.2.3:22", NULL };
  static const char *const jump[] = { "10.20.0.0/16:22", "db.corp:5432", "192.0.2.7:*",
                                      NULL };
  TgPolicyHostList list;
  const TgHostPattern *pattern;

  /* the global lines add up; a supplementary group matches */
  tg_policy_get_server_permit_open(policy, other, &list);
  assert_host_list(&list, FALSE, FALSE, global, "t.conf", 1);
  tg_policy_get_server_permit_open(policy, NULL, &list);
  assert_host_list(&list, FALSE, FALSE, global, "t.conf", 1);
  tg_policy_get_server_permit_open(policy, jumper, &list);
  assert_host_list(&list, FALSE, FALSE, jump, "t.conf", 6);
  /* the first matching block decides */
  tg_policy_get_server_permit_open(policy, contractor, &list);
  assert_host_list(&list, FALSE, TRUE, NULL, "t.conf", 4);
  tg_policy_get_server_permit_open(policy, admin, &list);
  assert_host_list(&list, FALSE, FALSE, jump, "t.conf", 6);
  tg_policy_get_server_permit_open(empty, jumper, &list);
  assert_host_list(&list, TRUE, FALSE, NULL, "<default>", 0);

  /* what the firewall reads: kinds, networks, ports */
  tg_policy_get_server_permit_open(policy, jumper, &list);
  pattern = g_ptr_array_index(list.entries, 0);
  g_assert_cmpint(pattern->kind, ==, TG_HOST_PATTERN_NETWORK);
  g_assert_cmpint(pattern->network.family, ==, AF_INET);
  g_assert_cmpuint(pattern->network.prefix, ==, 16);
  g_assert_cmpuint(pattern->network.bytes[0], ==, 10);
  g_assert_cmpuint(pattern->network.bytes[1], ==, 20);
  g_assert_cmpuint(pattern->ports.first, ==, 22);
  g_assert_cmpuint(pattern->ports.last, ==, 22);
  pattern = g_ptr_array_index(list.entries, 1);
  g_assert_cmpint(pattern->kind, ==, TG_HOST_PATTERN_NAME);
  g_assert_cmpstr(pattern->name, ==, "db.corp");
  pattern = g_ptr_array_index(list.entries, 2);
  g_assert_cmpuint(pattern->network.prefix, ==, 32);
  g_assert_cmpuint(pattern->ports.first, ==, 0); /* "*" */
  g_assert_cmpuint(pattern->ports.last, ==, 65535);
  tg_policy_get_server_permit_open(policy, other, &list);
  pattern = g_ptr_array_index(list.entries, 1);
  g_assert_cmpint(pattern->network.family, ==, AF_INET6);
  g_assert_cmpuint(pattern->network.prefix, ==, 32);
  g_assert_cmpuint(pattern->ports.first, ==, 8000);
  g_assert_cmpuint(pattern->ports.last, ==, 8999);
  /* IPv4-mapped IPv6 is the IPv4 address */
  pattern = g_ptr_array_index(list.entries, 2);
  g_assert_cmpint(pattern->network.family, ==, AF_INET);
  g_assert_cmpuint(pattern->network.prefix, ==, 32);
}

/* SftpOnly by Match Group: any of the user's groups, supplementary ones
 * included; a negated group excludes; Match User beats a later block. */
static void
test_sftp_only(void)
{
  g_autoptr(TgPolicy) policy = tg_policy_parse_string("t.conf",
                                                      "SftpOnly no\n"              /* 1 */
                                                      "Match User keep\n"          /* 2 */
                                                      "  SftpOnly no\n"            /* 3 */
                                                      "Match Group sftp,!admins\n" /* 4 */
                                                      "  SftpOnly yes\n",          /* 5 */
                                                      -1, NULL);
  const char *primary[] = { "sftp", NULL };
  const char *supplementary[] = { "users", "staff", "sftp", NULL };
  const char *admin[] = { "users", "sftp", "admins", NULL };
  const char *keep[] = { "keep", "sftp", NULL };
  const char *none[] = { "users", NULL };
  g_autoptr(TgPolicySubject) a = tg_policy_subject_new("a", 1, primary);
  g_autoptr(TgPolicySubject) b = tg_policy_subject_new("b", 2, supplementary);
  g_autoptr(TgPolicySubject) c = tg_policy_subject_new("c", 3, admin);
  g_autoptr(TgPolicySubject) k = tg_policy_subject_new("keep", 4, keep);
  g_autoptr(TgPolicySubject) d = tg_policy_subject_new("d", 5, none);
  TgPolicyOrigin origin;

  g_assert_true(tg_policy_is_sftp_only(policy, a, &origin));
  g_assert_cmpstr(origin.keyword, ==, "SftpOnly");
  g_assert_cmpuint(origin.line, ==, 5);
  g_assert_true(tg_policy_is_sftp_only(policy, b, &origin));
  g_assert_cmpuint(origin.line, ==, 5);
  g_assert_false(tg_policy_is_sftp_only(policy, c, &origin));
  g_assert_cmpuint(origin.line, ==, 1);
  g_assert_false(tg_policy_is_sftp_only(policy, k, &origin));
  g_assert_cmpuint(origin.line, ==, 3);
  g_assert_false(tg_policy_is_sftp_only(policy, d, NULL));
  g_assert_false(tg_policy_is_sftp_only(policy, NULL, NULL));
}

/* ---- Values and limits ------------------------------------------------------- */

static void
test_limits(Fixture *fixture, gconstpointer data)
{
  static const struct {
    const char *subject;
    TgPolicyLimitKind kind;
    guint64 in_use;
    gboolean allowed;
    const char *reason;
  } cases[] = {
    { "alice", TG_POLICY_MAX_TUNNELS, 0, TRUE,
      "MaxTunnels 2 at t.conf:11 allows another tunnel (0 in use)" },
    { "alice", TG_POLICY_MAX_TUNNELS, 1, TRUE,
      "MaxTunnels 2 at t.conf:11 allows another tunnel (1 in use)" },
    { "alice", TG_POLICY_MAX_TUNNELS, 2, FALSE,
      "MaxTunnels 2 at t.conf:11 does not allow another tunnel (2 in use)" },
    { "alice", TG_POLICY_MAX_CONNECTIONS, 2047, TRUE,
      "MaxConnections 2048 at <default> allows another connection (2047 in use)" },
    { "alice", TG_POLICY_MAX_CONNECTIONS, 2048, FALSE,
      "MaxConnections 2048 at <default> does not allow another connection (2048 in "
      "use)" },
    { "alice", TG_POLICY_MAX_LISTENERS, 256, FALSE,
      "MaxListeners 256 at <default> does not allow another listener (256 in use)" },
    { "alice", TG_POLICY_MAX_PENDING_CALLS, 63, TRUE,
      "MaxPendingCalls 64 at <default> allows another pending call (63 in use)" },
    { "alice", TG_POLICY_DAEMON_MAX_TUNNELS, 4096, FALSE,
      "DaemonMaxTunnels 4096 at <default> does not allow another tunnel in the daemon "
      "(4096 in use)" },
    { "bob", TG_POLICY_MAX_CONNECTIONS, 5, FALSE,
      "MaxConnections 5 at t.conf:24 does not allow another connection (5 in use)" },
  };
  TgPolicyLimit limit;

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(TgPolicyDecision) decision = tg_policy_check_count_limit(
        fixture->policy, subject_named(fixture, cases[i].subject), cases[i].kind,
        cases[i].in_use);

    assert_decision(decision, cases[i].allowed, cases[i].reason);
  }
  tg_policy_get_limit(fixture->policy, fixture->alice, TG_POLICY_MAX_TUNNELS, &limit);
  g_assert_true(limit.limited);
  g_assert_cmpuint(limit.value, ==, 2);
  g_assert_cmpstr(limit.origin.keyword, ==, "MaxTunnels");
  g_assert_cmpstr(limit.origin.file, ==, "t.conf");
  g_assert_cmpuint(limit.origin.line, ==, 11);
  tg_policy_get_limit(fixture->policy, fixture->alice, TG_POLICY_IDLE_TIMEOUT, &limit);
  g_assert_false(limit.limited);
  g_assert_cmpstr(limit.origin.file, ==, "<default>");
  g_assert_cmpuint(limit.origin.line, ==, 0);
}

/* The limits finite by default, sizes with units, and amounts at once. */
static void
test_resource_limits(void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) policy = tg_policy_parse_string("t.conf",
                                                      "DaemonMaxBuffered 2G\n" /* 1 */
                                                      "MaxBuffered 640K\n"     /* 2 */
                                                      "Match User big\n"       /* 3 */
                                                      "  MaxBuffered none\n"   /* 4 */
                                                      "  MaxListeners 3\n",    /* 5 */
                                                      -1, &error);
  g_autoptr(TgPolicy) empty = tg_policy_parse_string("t.conf", "", -1, NULL);
  g_autoptr(TgPolicySubject) big = tg_policy_subject_new("big", 7, NULL);
  g_autoptr(TgPolicyDecision) three = NULL;
  g_autoptr(TgPolicyDecision) four = NULL;
  g_autofree char *dump = NULL;
  static const char *const bad[] = { "MaxBuffered 12Q", "MaxBuffered -1",
                                     "MaxBuffered 5000000000K",
                                     "Match User x\n  DaemonMaxTunnels 3" };
  TgPolicyLimit limit;

  g_assert_no_error(error);
  tg_policy_get_limit(policy, NULL, TG_POLICY_MAX_BUFFERED, &limit);
  g_assert_cmpuint(limit.value, ==, 640 * 1024);
  tg_policy_get_limit(policy, big, TG_POLICY_MAX_BUFFERED, &limit);
  g_assert_false(limit.limited);
  g_assert_cmpuint(limit.origin.line, ==, 4);
  tg_policy_get_limit(policy, big, TG_POLICY_DAEMON_MAX_BUFFERED, &limit);
  g_assert_cmpuint(limit.value, ==, G_GUINT64_CONSTANT(2) << 30);
  /* every count limit is finite by default */
  for (TgPolicyLimitKind kind = TG_POLICY_MAX_TUNNELS;
       kind <= TG_POLICY_DAEMON_MAX_PENDING_CALLS; kind++) {
    if (kind == TG_POLICY_MAX_LIFETIME || kind == TG_POLICY_IDLE_TIMEOUT)
      continue;
    tg_policy_get_limit(empty, big, kind, &limit);
    g_test_message("%s %" G_GUINT64_FORMAT, limit.origin.keyword, limit.value);
    g_assert_true(limit.limited);
    g_assert_cmpuint(limit.value, >, 0);
  }
  three = tg_policy_check_amount_limit(policy, big, TG_POLICY_MAX_LISTENERS, 1, 2);
  four = tg_policy_check_amount_limit(policy, big, TG_POLICY_MAX_LISTENERS, 1, 3);
  assert_decision(three, TRUE,
                  "MaxListeners 3 at t.conf:5 allows 2 more of listeners "
                  "(1 in use)");
  assert_decision(four, FALSE,
                  "MaxListeners 3 at t.conf:5 does not allow 3 more of "
                  "listeners (1 in use)");
  dump = tg_policy_dump_effective(policy, NULL, FALSE);
  g_assert_nonnull(strstr(dump, "\nmaxbuffered 640K\n"));
  g_assert_nonnull(strstr(dump, "\ndaemonmaxbuffered 2G\n"));
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) bad_error = NULL;
    g_autoptr(TgPolicy) refused =
        tg_policy_parse_string("t.conf", bad[i], -1, &bad_error);

    g_test_message("%s: %s", bad[i], bad_error != NULL ? bad_error->message : "(none)");
    g_assert_null(refused);
    g_assert_error(bad_error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  }
}

static void
test_time_limits(void)
{
  g_autoptr(TgPolicy) policy = tg_policy_parse_string(
      "t.conf", "MaxLifetime 8h\nMatch User night\n  IdleTimeout 1h30m\n", -1, NULL);
  g_autoptr(TgPolicySubject) night = tg_policy_subject_new("night", 7, NULL);
  TgPolicyLimit limit;

  tg_policy_get_limit(policy, night, TG_POLICY_MAX_LIFETIME, &limit);
  g_assert_true(limit.limited);
  g_assert_cmpuint(limit.value, ==, 8 * 3600);
  g_assert_cmpuint(limit.origin.line, ==, 1);
  tg_policy_get_limit(policy, night, TG_POLICY_IDLE_TIMEOUT, &limit);
  g_assert_cmpuint(limit.value, ==, 5400);
  g_assert_cmpstr(limit.origin.keyword, ==, "IdleTimeout");
  g_assert_cmpuint(limit.origin.line, ==, 3);

  /* the decision that ends a tunnel names the rule */
  {
    g_autoptr(TgPolicyDecision) lifetime =
        tg_policy_limit_reached(policy, night, TG_POLICY_MAX_LIFETIME);
    g_autoptr(TgPolicyDecision) idle =
        tg_policy_limit_reached(policy, night, TG_POLICY_IDLE_TIMEOUT);

    g_assert_false(lifetime->allowed);
    g_assert_cmpstr(lifetime->reason, ==,
                    "MaxLifetime 28800s at t.conf:1 ends the tunnel");
    g_assert_cmpstr(idle->keyword, ==, "IdleTimeout");
    g_assert_cmpuint(idle->line, ==, 3);
    g_assert_cmpstr(idle->reason, ==, "IdleTimeout 5400s at t.conf:3 ends the tunnel");
  }
}

/* MaxReconnectAttempts: none (for ever) by default, a count per user, 0
 * (fail at the first loss) allowed, garbage refused naming the line. */
static void
test_reconnect_attempts(void)
{
  g_autoptr(TgPolicy) defaults = tg_policy_parse_string("t.conf", "", -1, NULL);
  g_autoptr(TgPolicy) policy = tg_policy_parse_string(
      "t.conf", "MaxReconnectAttempts 20\nMatch User laptop\n  MaxReconnectAttempts 0\n",
      -1, NULL);
  g_autoptr(TgPolicySubject) laptop = tg_policy_subject_new("laptop", 7, NULL);
  g_autoptr(TgPolicySubject) other = tg_policy_subject_new("other", 8, NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) bad = NULL;
  TgPolicyLimit limit;

  tg_policy_get_limit(defaults, other, TG_POLICY_MAX_RECONNECT_ATTEMPTS, &limit);
  g_assert_false(limit.limited);
  g_assert_cmpstr(limit.origin.keyword, ==, "MaxReconnectAttempts");
  tg_policy_get_limit(policy, other, TG_POLICY_MAX_RECONNECT_ATTEMPTS, &limit);
  g_assert_true(limit.limited);
  g_assert_cmpuint(limit.value, ==, 20);
  g_assert_cmpuint(limit.origin.line, ==, 1);
  tg_policy_get_limit(policy, laptop, TG_POLICY_MAX_RECONNECT_ATTEMPTS, &limit);
  g_assert_true(limit.limited);
  g_assert_cmpuint(limit.value, ==, 0);
  g_assert_cmpuint(limit.origin.line, ==, 3);

  bad = tg_policy_parse_string("t.conf", "MaxReconnectAttempts often\n", -1, &error);
  g_assert_null(bad);
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_assert_nonnull(strstr(error->message, "t.conf:1"));
  g_assert_nonnull(strstr(error->message, "MaxReconnectAttempts"));
}

static void
test_gateway_ports_yes(void)
{
  g_autoptr(TgPolicy) policy = tg_policy_parse_string(
      "t.conf", "GatewayPorts clientspecified\nMatch User gw\n GatewayPorts yes\n", -1,
      NULL);
  g_autoptr(TgPolicySubject) gw = tg_policy_subject_new("gw", 7, NULL);
  static const struct {
    const char *forward;
    gboolean yes_all;
  } cases[] = {
    { "L 8080:h:80", TRUE },
    { "D 1080", TRUE },
    { "L 127.0.0.1:8080:h:80", FALSE },
    { "L *:8080:h:80", FALSE },
    { "R 8080:h:80", FALSE },
    { "L /tmp/x.sock:h:80", FALSE },
  };
  TgPolicyOrigin origin;

  g_assert_cmpint(tg_policy_get_gateway_ports(policy, gw, &origin), ==,
                  TG_GATEWAY_PORTS_YES);
  g_assert_cmpuint(origin.line, ==, 3);
  g_assert_cmpint(tg_policy_get_gateway_ports(policy, NULL, NULL), ==,
                  TG_GATEWAY_PORTS_CLIENT_SPECIFIED);
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(TgForward) forward = tg_forward_parse(cases[i].forward, NULL);

    g_assert_cmpint(tg_policy_forward_listens_on_all_addresses(policy, gw, forward), ==,
                    cases[i].yes_all);
    /* "clientspecified" never turns a missing bind address into "all". */
    g_assert_false(tg_policy_forward_listens_on_all_addresses(policy, NULL, forward));
  }
}

static void
test_host_key_policy(void)
{
  g_autoptr(TgPolicy) policy = tg_policy_parse_string(
      "t.conf", "HostKeyPolicy strict\nMatch Group ops\n HostKeyPolicy pinned-only\n", -1,
      NULL);
  g_autoptr(TgPolicy) empty = tg_policy_parse_string("t.conf", "", -1, NULL);
  const char *groups[] = { "x", "ops", NULL };
  g_autoptr(TgPolicySubject) ops = tg_policy_subject_new("x", 7, groups);
  TgPolicyOrigin origin;

  g_assert_cmpint(tg_policy_get_host_key_policy(policy, NULL, &origin), ==,
                  TG_HOST_KEY_POLICY_STRICT);
  g_assert_cmpuint(origin.line, ==, 1);
  g_assert_cmpint(tg_policy_get_host_key_policy(policy, ops, &origin), ==,
                  TG_HOST_KEY_POLICY_PINNED_ONLY);
  g_assert_cmpstr(origin.keyword, ==, "HostKeyPolicy");
  g_assert_cmpint(tg_policy_get_host_key_policy(empty, ops, &origin), ==,
                  TG_HOST_KEY_POLICY_KNOWN_OR_PINNED);
  g_assert_cmpstr(origin.file, ==, "<default>");

  /* as decisions: only pinned-only refuses, and only a tunnel without a pin */
  {
    static const struct {
      gboolean ops, pinned, allowed;
      const char *reason;
    } cases[] = {
      { TRUE, FALSE, FALSE,
        "HostKeyPolicy pinned-only at t.conf:3 requires the host-key option" },
      { TRUE, TRUE, TRUE,
        "HostKeyPolicy pinned-only at t.conf:3 allows the pinned host key" },
      { FALSE, FALSE, TRUE,
        "HostKeyPolicy strict at t.conf:1 allows a host key in known_hosts only" },
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
      g_autoptr(TgPolicyDecision) decision =
          tg_policy_check_host_key(policy, cases[i].ops ? ops : NULL, cases[i].pinned);
      g_assert_cmpint(decision->allowed, ==, cases[i].allowed);
      g_assert_cmpstr(decision->keyword, ==, "HostKeyPolicy");
      g_assert_cmpstr(decision->reason, ==, cases[i].reason);
    }
    g_autoptr(TgPolicyDecision) default_decision =
        tg_policy_check_host_key(empty, ops, FALSE);
    g_assert_true(default_decision->allowed);
    g_assert_cmpstr(default_decision->reason, ==,
                    "HostKeyPolicy known-or-pinned at <default> allows a host key in "
                    "known_hosts or pinned");
  }
}

static void
test_global_values(void)
{
  g_autoptr(TgPolicy) policy = tg_policy_parse_string(
      "t.conf",
      "EgressLockdown yes\nSshPorts 22,2222\nListenerGuard no\nConnectBackPinning no\n"
      "DetectSshBanner yes\nLogRejections no\nServerMode yes\n"
      "SshdDropIn /etc/ssh/sshd_config.d/01-tg.conf\nSshdReload no\n"
      "SshdConfig /srv/ssh/sshd_config\nSshdBinary /opt/openssh/sbin/sshd\n"
      "Match Group sftp\n  SftpOnly yes\n  LockdownExempt yes\n",
      -1, NULL);
  g_autoptr(TgPolicy) empty = tg_policy_parse_string("t.conf", "", -1, NULL);
  const TgPolicyGlobals *globals = tg_policy_get_globals(policy);
  const TgPolicyGlobals *defaults = tg_policy_get_globals(empty);
  const char *groups[] = { "f", "sftp", NULL };
  g_autoptr(TgPolicySubject) sftp = tg_policy_subject_new("f", 9, groups);
  TgPolicyOrigin origin;

  g_assert_true(globals->egress_lockdown);
  g_assert_cmpuint(globals->ssh_ports->len, ==, 2);
  g_assert_cmpuint(g_array_index(globals->ssh_ports, TgPortRange, 1).first, ==, 2222);
  g_assert_false(globals->listener_guard);
  g_assert_false(globals->connect_back_pinning);
  g_assert_true(globals->detect_ssh_banner);
  g_assert_false(globals->log_rejections);
  g_assert_true(globals->server_mode);
  g_assert_cmpstr(globals->sshd_drop_in, ==, "/etc/ssh/sshd_config.d/01-tg.conf");
  g_assert_false(globals->sshd_reload);
  g_assert_cmpstr(globals->sshd_config, ==, "/srv/ssh/sshd_config");
  g_assert_cmpstr(globals->sshd_binary, ==, "/opt/openssh/sbin/sshd");
  g_assert_true(tg_policy_is_sftp_only(policy, sftp, &origin));
  g_assert_cmpuint(origin.line, ==, 13);
  g_assert_true(tg_policy_is_lockdown_exempt(policy, sftp, NULL));
  g_assert_false(tg_policy_is_sftp_only(policy, NULL, NULL));

  g_assert_false(defaults->egress_lockdown);
  g_assert_cmpuint(defaults->ssh_ports->len, ==, 1);
  g_assert_cmpuint(g_array_index(defaults->ssh_ports, TgPortRange, 0).first, ==, 22);
  g_assert_true(defaults->listener_guard);
  g_assert_true(defaults->connect_back_pinning);
  g_assert_false(defaults->detect_ssh_banner);
  g_assert_true(defaults->log_rejections);
  g_assert_false(defaults->server_mode);
  g_assert_cmpstr(defaults->sshd_drop_in, ==,
                  "/etc/ssh/sshd_config.d/00-tunnelgate.conf");
  g_assert_true(defaults->sshd_reload);
  g_assert_cmpstr(defaults->sshd_config, ==, "/etc/ssh/sshd_config");
  g_assert_cmpstr(defaults->sshd_binary, ==, "/usr/sbin/sshd");
}

/* ---- The firewall's lists ------------------------------------------------------ */

static void
assert_addresses(const GArray *addresses, const char *const *expected)
{
  g_assert_nonnull(addresses);
  g_assert_cmpuint(addresses->len, ==, g_strv_length((char **)expected));
  for (guint i = 0; i < addresses->len; i++) {
    const TgNetwork *address = &g_array_index(addresses, TgNetwork, i);
    TgHostPattern pattern = { TG_HOST_PATTERN_NETWORK, NULL, *address, { 0, 65535 } };
    g_autofree char *text = tg_host_pattern_to_string(&pattern, TG_PORT_OPTIONAL);

    g_assert_cmpuint(address->prefix, ==, address->family == AF_INET ? 32 : 128);
    g_assert_cmpstr(text, ==, expected[i]);
  }
}

static void
assert_principals(const GPtrArray *principals, const char *const *expected)
{
  g_assert_nonnull(principals);
  g_assert_cmpuint(principals->len, ==, g_strv_length((char **)expected));
  for (guint i = 0; i < principals->len; i++)
    g_assert_cmpstr(g_ptr_array_index(principals, i), ==, expected[i]);
}

static void
test_listener_users(void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) policy =
      tg_policy_parse_string("t.conf",
                             "ListenerUsers owner\n"                          /* 1 */
                             "Match User alice\n"                             /* 2 */
                             "  ListenerUsers group:devs,USER:backup\n"       /* 3 */
                             "  ListenerUsers owner group:devs user:a@corp\n" /* 4 */
                             "Match Group ops\n"                              /* 5 */
                             "  ListenerUsers any\n",                         /* 6 */
                             -1, &error);
  g_autoptr(TgPolicy) empty = tg_policy_parse_string("t.conf", "", -1, NULL);
  const char *ops_groups[] = { "carol", "ops", NULL };
  g_autoptr(TgPolicySubject) alice = tg_policy_subject_new("alice", 1000, NULL);
  g_autoptr(TgPolicySubject) bob = tg_policy_subject_new("bob", 1001, NULL);
  g_autoptr(TgPolicySubject) carol = tg_policy_subject_new("carol", 1002, ops_groups);
  const char *const alices[] = { "group:devs", "user:backup", "user:a@corp", NULL };
  const char *const nobody[] = { NULL };
  static const char *const bad[] = {
    "ListenerUsers devs", "ListenerUsers user:",      "ListenerUsers group:",
    "ListenerUsers a,,b", "ListenerUsers any user:x", "ListenerUsers nobody:x",
  };
  TgListenerUsers users;

  g_assert_no_error(error);
  tg_policy_get_listener_users(policy, bob, &users);
  g_assert_false(users.any);
  assert_principals(users.principals, nobody);
  g_assert_cmpstr(users.origin.keyword, ==, "ListenerUsers");
  g_assert_cmpuint(users.origin.line, ==, 1);

  tg_policy_get_listener_users(policy, alice, &users);
  g_assert_false(users.any);
  assert_principals(users.principals, alices);
  g_assert_cmpuint(users.origin.line, ==, 3);

  tg_policy_get_listener_users(policy, carol, &users);
  g_assert_true(users.any);
  g_assert_null(users.principals);
  g_assert_cmpuint(users.origin.line, ==, 6);

  tg_policy_get_listener_users(empty, alice, &users);
  g_assert_false(users.any);
  assert_principals(users.principals, nobody);
  g_assert_cmpstr(users.origin.file, ==, "<default>");

  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) bad_error = NULL;
    g_autoptr(TgPolicy) refused =
        tg_policy_parse_string("t.conf", bad[i], -1, &bad_error);

    g_test_message("%s: %s", bad[i], bad_error != NULL ? bad_error->message : "(none)");
    g_assert_null(refused);
    g_assert_error(bad_error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
    g_assert_true(strstr(bad_error->message, "t.conf:1") != NULL);
    g_assert_true(strstr(bad_error->message, "ListenerUsers") != NULL);
  }
}

static void
test_listener_sources(void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) policy =
      tg_policy_parse_string("t.conf",
                             "ListenerSources 192.0.2.1 ::ffff:192.0.2.2\n" /* 1 */
                             "ListenerSources 2001:db8::1,192.0.2.1\n"      /* 2 */
                             "Match User alice\n"                           /* 3 */
                             "  ListenerSources none\n"                     /* 4 */
                             "Match User bob\n"                             /* 5 */
                             "  ListenerSources any\n"                      /* 6 */
                             "Match Group ops\n"                            /* 7 */
                             "  ListenerSources [2001:db8::9]\n",           /* 8 */
                             -1, &error);
  g_autoptr(TgPolicy) empty = tg_policy_parse_string("t.conf", "", -1, NULL);
  const char *ops_groups[] = { "carol", "ops", NULL };
  g_autoptr(TgPolicySubject) alice = tg_policy_subject_new("alice", 1000, NULL);
  g_autoptr(TgPolicySubject) bob = tg_policy_subject_new("bob", 1001, NULL);
  g_autoptr(TgPolicySubject) carol = tg_policy_subject_new("carol", 1002, ops_groups);
  const char *const global[] = { "192.0.2.1", "192.0.2.2", "2001:db8::1", NULL };
  const char *const ops[] = { "2001:db8::9", NULL };
  const char *const nothing[] = { NULL };
  TgListenerSources sources;

  g_assert_no_error(error);
  tg_policy_get_listener_sources(policy, NULL, &sources);
  g_assert_false(sources.any);
  assert_addresses(sources.addresses, global);
  g_assert_cmpuint(g_array_index(sources.addresses, TgNetwork, 1).family, ==, AF_INET);
  g_assert_cmpstr(sources.origin.keyword, ==, "ListenerSources");
  g_assert_cmpstr(sources.origin.file, ==, "t.conf");
  g_assert_cmpuint(sources.origin.line, ==, 1);

  tg_policy_get_listener_sources(policy, alice, &sources);
  g_assert_false(sources.any);
  assert_addresses(sources.addresses, nothing);
  g_assert_cmpuint(sources.origin.line, ==, 4);

  tg_policy_get_listener_sources(policy, bob, &sources);
  g_assert_true(sources.any);
  g_assert_null(sources.addresses);
  g_assert_cmpuint(sources.origin.line, ==, 6);

  tg_policy_get_listener_sources(policy, carol, &sources);
  g_assert_false(sources.any);
  assert_addresses(sources.addresses, ops);
  g_assert_cmpuint(sources.origin.line, ==, 8);

  tg_policy_get_listener_sources(empty, alice, &sources);
  g_assert_true(sources.any);
  g_assert_null(sources.addresses);
  g_assert_cmpstr(sources.origin.file, ==, "<default>");
  g_assert_cmpuint(sources.origin.line, ==, 0);
}

/* tg_policy_foreach_server() collects "pattern@kind" texts. */
static void
collect_server(const TgHostPattern *pattern, gpointer user_data)
{
  GPtrArray *seen = user_data;

  g_ptr_array_add(seen, tg_host_pattern_to_string(pattern, TG_PORT_OPTIONAL));
}

static void
assert_servers(const char *text, const char *const *expected, gboolean expect_any)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) policy = tg_policy_parse_string("t.conf", text, -1, &error);
  g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(g_free);
  gboolean any = !expect_any;

  g_assert_no_error(error);
  tg_policy_foreach_server(policy, collect_server, seen, &any);
  g_ptr_array_add(seen, NULL);
  g_assert_cmpstrv((char **)seen->pdata, expected);
  g_assert_cmpint(any, ==, expect_any);
  /* @any may be NULL. */
  g_ptr_array_set_size(seen, 0);
  tg_policy_foreach_server(policy, collect_server, seen, NULL);
  g_assert_cmpuint(seen->len, ==, g_strv_length((char **)expected));
}

static void
test_foreach_server(void)
{
  static const char *const listed[] = {
    "jump.ops.corp", "10.7.0.0/16", "*.dba.corp:2222", "gw.corp:22", "10.9.0.0/16",
    "2001:db8::/32", "gw?.corp",    "192.0.2.1",       NULL,
  };
  static const char *const with_star[] = { "*", "gw.corp", NULL };
  static const char *const global_any[] = { "gw.corp", NULL };
  static const char *const none[] = { NULL };

  /* Match blocks first, in file order (across a Match block that sets
   * nothing), then the first global section; the default "any" cannot
   * apply to anyone, and a later global line is ignored. */
  assert_servers("PermitServer gw.corp:22 10.9.0.0/16\n"
                 "PermitServer 2001:db8::/32 gw?.corp\n"
                 "PermitServer 192.0.2.1\n"
                 "Match Group ops\n"
                 "  PermitServer jump.ops.corp\n"
                 "  PermitServer 10.7.0.0/16\n"
                 "Match User alice\n"
                 "  MaxTunnels 1\n"
                 "Match Group dba\n"
                 "  PermitServer *.dba.corp:2222\n"
                 "Match All\n"
                 "  PermitServer none\n",
                 listed, FALSE);
  /* "*" in a Match block allows any server; it is passed on too. */
  assert_servers("PermitServer gw.corp\nMatch User bob\n  PermitServer *\n", with_star,
                 TRUE);
  /* "any" in a Match block: no pattern, but any. */
  assert_servers("PermitServer gw.corp\nMatch User bob\n  PermitServer any\n", global_any,
                 TRUE);
  /* No global line: the default "any" applies to those no block matches. */
  assert_servers("Match User bob\n  PermitServer gw.corp\n", global_any, TRUE);
  assert_servers("", none, TRUE);
  assert_servers("PermitServer none\n", none, FALSE);
}

/* ---- Match User and Group ------------------------------------------------------ */

static void
test_match_criteria(void)
{
  static const struct {
    const char *criteria;
    const char *user;
    const char *groups[4];
    gboolean applies;
  } cases[] = {
    { "User alice", "alice", { "alice", NULL }, TRUE },
    { "User alice", "Alice", { "alice", NULL }, FALSE },
    { "user ALICE", "alice", { "alice", NULL }, FALSE },
    { "User a*,b?b", "bob", { NULL }, TRUE },
    { "User *,!root", "root", { "root", NULL }, FALSE },
    { "User *,!root", "alice", { NULL }, TRUE },
    { "User !root", "alice", { NULL }, FALSE },
    { "Group dba", "alice", { "alice", "dba", NULL }, TRUE },
    /* supplementary groups count, not only the primary */
    { "Group dba", "alice", { "alice", "wheel", "dba", NULL }, TRUE },
    { "Group dba", "alice", { "alice", NULL }, FALSE },
    { "Group dba,!contractors", "bob", { "bob", "dba", "contractors", NULL }, FALSE },
    { "GROUP d*", "x", { "x", "dev", NULL }, TRUE },
    { "User alice Group dba", "alice", { "alice", "dba", NULL }, TRUE },
    { "User alice Group dba", "alice", { "alice", NULL }, FALSE },
    { "User alice Group dba", "carol", { "carol", "dba", NULL }, FALSE },
    { "All", "anyone", { NULL }, TRUE },
    { "all", "anyone", { NULL }, TRUE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *text =
        g_strdup_printf("Match %s\n  MaxTunnels 7\n", cases[i].criteria);
    g_autoptr(GError) error = NULL;
    g_autoptr(TgPolicy) policy = tg_policy_parse_string("t.conf", text, -1, &error);
    g_autoptr(TgPolicySubject) subject =
        tg_policy_subject_new(cases[i].user, 1, cases[i].groups);
    TgPolicyLimit limit;

    g_test_message("Match %s for %s", cases[i].criteria, cases[i].user);
    g_assert_no_error(error);
    tg_policy_get_limit(policy, subject, TG_POLICY_MAX_TUNNELS, &limit);
    g_assert_cmpint(limit.value == 7, ==, cases[i].applies);
    /* A caller nobody knows gets only Match All. */
    tg_policy_get_limit(policy, NULL, TG_POLICY_MAX_TUNNELS, &limit);
    g_assert_cmpint(limit.value == 7, ==,
                    g_ascii_strcasecmp(cases[i].criteria, "All") == 0);
  }
}

/* ---- The effective policy ------------------------------------------------------- */

static void
test_dump(Fixture *fixture, gconstpointer data)
{
  static const char expected_carol[] =
      "allowtcpforwarding yes  # t.conf:14\n"
      "allowstreamlocalforwarding local  # t.conf:15\n"
      "allowdynamicforwarding yes  # t.conf:16\n"
      "gatewayports clientspecified  # t.conf:17\n"
      "listenersources any  # <default>\n"
      "listenerusers owner  # <default>\n"
      "permitopen any  # t.conf:18\n"
      "permitremoteopen localhost:80  # t.conf:8\n"
      "permitlisten 0 7000  # t.conf:21\n"
      "permitserver gw.corp:22 10.9.0.0/16  # t.conf:9\n"
      "maxtunnels 2  # t.conf:11\n"
      "maxconnections 2048  # <default>\n"
      "maxlisteners 256  # <default>\n"
      "maxbuffered 1G  # <default>\n"
      "maxpendingcalls 64  # <default>\n"
      "daemonmaxtunnels 4096  # <default>\n"
      "daemonmaxlisteners 8192  # <default>\n"
      "daemonmaxconnections 32768  # <default>\n"
      "daemonmaxbuffered 4G  # <default>\n"
      "daemonmaxpendingcalls 1024  # <default>\n"
      "maxlifetime none  # <default>\n"
      "idletimeout none  # <default>\n"
      "maxreconnectattempts none  # <default>\n"
      "hostkeypolicy known-or-pinned  # <default>\n"
      "egresslockdown no  # <default>\n"
      "sshports 22  # <default>\n"
      "lockdownexempt no  # <default>\n"
      "listenerguard yes  # <default>\n"
      "connectbackpinning yes  # <default>\n"
      "detectsshbanner no  # <default>\n"
      "logrejections yes  # <default>\n"
      "servermode no  # <default>\n"
      "sftponly no  # <default>\n"
      "serverpermitopen any  # <default>\n"
      "sshdconfig /etc/ssh/sshd_config  # <default>\n"
      "sshdbinary /usr/sbin/sshd  # <default>\n"
      "sshddropin /etc/ssh/sshd_config.d/00-tunnelgate.conf  # <default>\n"
      "sshdreload yes  # <default>\n";
  g_autofree char *carol =
      tg_policy_dump_effective(fixture->policy, fixture->carol, TRUE);
  g_autofree char *plain =
      tg_policy_dump_effective(fixture->policy, fixture->alice, FALSE);

  g_assert_cmpstr(carol, ==, expected_carol);
  g_assert_true(g_str_has_prefix(plain, "allowtcpforwarding local\n"
                                        "allowstreamlocalforwarding no\n"
                                        "allowdynamicforwarding no\n"
                                        "gatewayports no\n"
                                        "listenersources any\n"
                                        "listenerusers owner\n"
                                        "permitopen db.corp:5432 *.web.corp:443 "
                                        "10.0.0.0/8:22 [2001:db8::]/32:8000-8999\n"
                                        "permitremoteopen localhost:80\n"
                                        "permitlisten localhost:8080 9000-9100\n"));
}

/* The dump without origins is itself a policy that means the same. */
static void
test_dump_parses_back(Fixture *fixture, gconstpointer data)
{
  const TgPolicySubject *subjects[] = { fixture->alice, fixture->bob, fixture->carol };

  for (gsize i = 0; i < G_N_ELEMENTS(subjects); i++) {
    g_autofree char *dump = tg_policy_dump_effective(fixture->policy, subjects[i], FALSE);
    g_autoptr(GError) error = NULL;
    g_autoptr(TgPolicy) again = tg_policy_parse_string("dump.conf", dump, -1, &error);
    g_autofree char *dump_again = NULL;

    g_assert_no_error(error);
    dump_again = tg_policy_dump_effective(again, NULL, FALSE);
    g_assert_cmpstr(dump_again, ==, dump);
  }
}

/* ---- Threads -------------------------------------------------------------------- */

typedef struct {
  const Fixture *fixture;
  guint allowed;
} ReaderData;

static gpointer
reader_thread(gpointer user_data)
{
  ReaderData *reader = user_data;
  static const char *const hosts[] = { "db.corp", "x.web.corp", "10.1.1.1", "evil.org" };

  for (guint i = 0; i < 20000; i++) {
    g_autoptr(TgPolicyDecision) decision = tg_policy_check_socks_destination(
        reader->fixture->policy, reader->fixture->alice, hosts[i % 4],
        i % 4 == 0 ? 5432 : (i % 4 == 1 ? 443 : 22));

    reader->allowed += decision->allowed;
  }
  return NULL;
}

/* Worker threads share one policy without locks. */
static void
test_concurrent_readers(Fixture *fixture, gconstpointer data)
{
  ReaderData readers[4];
  GThread *threads[4];

  for (guint i = 0; i < G_N_ELEMENTS(threads); i++) {
    readers[i] = (ReaderData){ fixture, 0 };
    threads[i] = g_thread_new("reader", reader_thread, &readers[i]);
  }
  for (guint i = 0; i < G_N_ELEMENTS(threads); i++) {
    g_thread_join(threads[i]);
    g_assert_cmpuint(readers[i].allowed, ==, 15000);
  }
}

static void
test_decision_to_error(Fixture *fixture, gconstpointer data)
{
  g_autoptr(TgPolicyDecision) denied =
      tg_policy_check_server(fixture->policy, fixture->alice, "evil.org", 22);
  g_autoptr(TgPolicyDecision) allowed =
      tg_policy_check_server(fixture->policy, fixture->alice, "gw.corp", 22);
  g_autoptr(TgPolicyDecision) limit = NULL;
  g_autoptr(GError) error = NULL;

  g_assert_true(tg_policy_decision_to_error(allowed, &error));
  g_assert_no_error(error);
  g_assert_false(tg_policy_decision_to_error(denied, &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_POLICY_DENIED);
  g_assert_cmpstr(error->message, ==,
                  "PermitServer at t.conf:9 does not allow evil.org:22");
  g_clear_error(&error);
  limit = tg_policy_check_count_limit(fixture->policy, fixture->alice,
                                      TG_POLICY_MAX_TUNNELS, 2);
  g_assert_false(tg_policy_decision_to_error(limit, &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_LIMIT_EXCEEDED);
  g_assert_cmpstr(error->message, ==,
                  "MaxTunnels 2 at t.conf:11 does not allow another tunnel (2 in use)");
}

static void
test_subject_from_uid(void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicySubject) root = tg_policy_subject_from_uid(0, &error);
  g_autoptr(TgPolicySubject) nobody = NULL;

  g_assert_no_error(error);
  g_assert_cmpstr(root->user, ==, "root");
  g_assert_cmpuint(root->uid, ==, 0);
  g_assert_cmpstr(root->groups[0], ==, "root");
  nobody = tg_policy_subject_from_uid(4123456789u, &error);
  g_assert_null(nobody);
  g_assert_error(error, TG_ERROR, TG_ERROR_NOT_FOUND);
}

#define ADD_FIXTURE_TEST(path, function)                                                 \
  g_test_add(path, Fixture, NULL, fixture_setup, function, fixture_teardown)

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  ADD_FIXTURE_TEST("/policy-decisions/local-forwards", test_local_forwards);
  ADD_FIXTURE_TEST("/policy-decisions/remote-forwards", test_remote_forwards);
  ADD_FIXTURE_TEST("/policy-decisions/dynamic-forwards", test_dynamic_forwards);
  g_test_add_func("/policy-decisions/defaults", test_defaults);
  g_test_add_func("/policy-decisions/forwarding-values", test_forwarding_values);
  ADD_FIXTURE_TEST("/policy-decisions/servers", test_servers);
  ADD_FIXTURE_TEST("/policy-decisions/socks-destinations", test_socks_destinations);
  ADD_FIXTURE_TEST("/policy-decisions/remote-open", test_remote_open);
  g_test_add_func("/policy-decisions/server-permit-open", test_server_permit_open);
  g_test_add_func("/policy-decisions/get-server-permit-open",
                  test_get_server_permit_open);
  g_test_add_func("/policy-decisions/sftp-only", test_sftp_only);
  ADD_FIXTURE_TEST("/policy-decisions/limits", test_limits);
  g_test_add_func("/policy-decisions/time-limits", test_time_limits);
  g_test_add_func("/policy-decisions/reconnect-attempts", test_reconnect_attempts);
  g_test_add_func("/policy-decisions/gateway-ports-yes", test_gateway_ports_yes);
  g_test_add_func("/policy-decisions/host-key-policy", test_host_key_policy);
  g_test_add_func("/policy-decisions/global-values", test_global_values);
  g_test_add_func("/policy-decisions/listener-sources", test_listener_sources);
  g_test_add_func("/policy-decisions/listener-users", test_listener_users);
  g_test_add_func("/policy-decisions/resource-limits", test_resource_limits);
  g_test_add_func("/policy-decisions/foreach-server", test_foreach_server);
  g_test_add_func("/policy-decisions/match-criteria", test_match_criteria);
  ADD_FIXTURE_TEST("/policy-decisions/dump", test_dump);
  ADD_FIXTURE_TEST("/policy-decisions/dump-parses-back", test_dump_parses_back);
  ADD_FIXTURE_TEST("/policy-decisions/concurrent-readers", test_concurrent_readers);
  ADD_FIXTURE_TEST("/policy-decisions/decision-to-error", test_decision_to_error);
  g_test_add_func("/policy-decisions/subject-from-uid", test_subject_from_uid);
  return g_test_run();
}
