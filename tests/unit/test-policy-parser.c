/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for the policy files: syntax (config-tokenizer.c), keywords
 * and values (policy-parser.c), limits, and which value wins across lines,
 * blocks and files (doc/policy.md, "Files and which value wins"). */
#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config-tokenizer.h"
#include "policy.h"
#include "tg-error.h"
#include "test-files.h"

/* ---- Helpers -------------------------------------------------------------- */

static TgPolicy *
parse_ok(const char *text)
{
  g_autoptr(GError) error = NULL;
  TgPolicy *policy = tg_policy_parse_string("t.conf", text, -1, &error);

  g_assert_no_error(error);
  g_assert_nonnull(policy);
  return policy;
}

static void
assert_parse_error_len(const char *text, gssize length, const char *message)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) policy = tg_policy_parse_string("t.conf", text, length, &error);

  g_assert_null(policy);
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_assert_true(g_utf8_validate(error->message, -1, NULL));
  g_assert_cmpstr(error->message, ==, message);
}

static void
assert_parse_error(const char *text, const char *message)
{
  g_autofree char *escaped = g_strescape(text, NULL);

  g_test_message("bad: %s", escaped);
  assert_parse_error_len(text, -1, message);
}

/* The effective line for one keyword, as `check-policy --user` prints it. */
static char *
effective_line(const TgPolicy *policy, const TgPolicySubject *subject,
               const char *keyword)
{
  g_autofree char *dump = tg_policy_dump_effective(policy, subject, TRUE);
  g_auto(GStrv) lines = g_strsplit(dump, "\n", -1);
  g_autofree char *prefix = g_strdup_printf("%s ", keyword);

  for (guint i = 0; lines[i] != NULL; i++) {
    if (g_str_has_prefix(lines[i], prefix))
      return g_strdup(lines[i]);
  }
  g_error("no line for %s in:\n%s", keyword, dump);
}

static void
assert_effective(const TgPolicy *policy, const TgPolicySubject *subject,
                 const char *keyword, const char *expected)
{
  g_autofree char *line = effective_line(policy, subject, keyword);

  g_assert_cmpstr(line, ==, expected);
}

static void
assert_warnings(const TgPolicy *policy, const char *const *expected)
{
  const char *const *warnings = tg_policy_get_warnings(policy);

  g_assert_nonnull(warnings);
  for (guint i = 0; expected[i] != NULL || warnings[i] != NULL; i++)
    g_assert_cmpstr(warnings[i], ==, expected[i]);
}

/* ---- Every keyword -------------------------------------------------------- */

typedef struct {
  const char *line;
  const char *effective; /* the keyword's dump line, origin included */
} ValueCase;

static void
test_keyword_values(void)
{
  static const ValueCase cases[] = {
    { "AllowTcpForwarding yes", "allowtcpforwarding yes  # t.conf:1" },
    { "AllowTcpForwarding all", "allowtcpforwarding all  # t.conf:1" },
    { "AllowTcpForwarding no", "allowtcpforwarding no  # t.conf:1" },
    { "AllowTcpForwarding local", "allowtcpforwarding local  # t.conf:1" },
    { "AllowTcpForwarding REMOTE", "allowtcpforwarding remote  # t.conf:1" },
    { "AllowStreamLocalForwarding local",
      "allowstreamlocalforwarding local  # t.conf:1" },
    { "allowdynamicforwarding No", "allowdynamicforwarding no  # t.conf:1" },
    { "GatewayPorts clientspecified", "gatewayports clientspecified  # t.conf:1" },
    { "GatewayPorts yes", "gatewayports yes  # t.conf:1" },
    { "ListenerSources 192.0.2.7", "listenersources 192.0.2.7  # t.conf:1" },
    { "ListenerSources 192.0.2.7,2001:DB8::1 [2001:db8::2] 198.51.100.1/32",
      "listenersources 192.0.2.7 2001:db8::1 2001:db8::2 198.51.100.1  # t.conf:1" },
    { "ListenerSources ::ffff:192.0.2.9 192.0.2.9 ::ffff:c000:209",
      "listenersources 192.0.2.9  # t.conf:1" },
    { "ListenerSources ANY", "listenersources any  # t.conf:1" },
    { "ListenerSources none", "listenersources none  # t.conf:1" },
    { "PermitOpen DB.corp:5432 *.web.corp:443 10.0.0.0/8:22 [2001:db8::]/32:8000-8999",
      "permitopen db.corp:5432 *.web.corp:443 10.0.0.0/8:22 [2001:db8::]/32:8000-8999  "
      "# t.conf:1" },
    { "PermitOpen any", "permitopen any  # t.conf:1" },
    { "PermitOpen NONE", "permitopen none  # t.conf:1" },
    { "PermitRemoteOpen localhost:80 *:*",
      "permitremoteopen localhost:80 *:*  # t.conf:1" },
    { "PermitListen 8080 0 localhost:9000-9100 [::1]:*",
      "permitlisten 8080 0 localhost:9000-9100 [::1]:*  # t.conf:1" },
    { "PermitServer gw.corp gw2.corp:2222 10.9.0.0/16 2001:db8::/32",
      "permitserver gw.corp gw2.corp:2222 10.9.0.0/16 2001:db8::/32  # t.conf:1" },
    { "MaxTunnels 0", "maxtunnels 0  # t.conf:1" },
    { "MaxTunnels 4294967295", "maxtunnels 4294967295  # t.conf:1" },
    { "MaxConnections none", "maxconnections none  # t.conf:1" },
    { "MaxConnections 100", "maxconnections 100  # t.conf:1" },
    { "MaxLifetime 8h", "maxlifetime 28800  # t.conf:1" },
    { "MaxLifetime 1h30m", "maxlifetime 5400  # t.conf:1" },
    { "MaxLifetime 90", "maxlifetime 90  # t.conf:1" },
    { "MaxLifetime 1w1d1h1m1S", "maxlifetime 694861  # t.conf:1" },
    { "MaxLifetime 1h30", "maxlifetime 3630  # t.conf:1" },
    { "IdleTimeout 15m", "idletimeout 900  # t.conf:1" },
    { "IdleTimeout none", "idletimeout none  # t.conf:1" },
    { "HostKeyPolicy strict", "hostkeypolicy strict  # t.conf:1" },
    { "HostKeyPolicy pinned-only", "hostkeypolicy pinned-only  # t.conf:1" },
    { "HostKeyPolicy known-or-pinned", "hostkeypolicy known-or-pinned  # t.conf:1" },
    { "EgressLockdown yes", "egresslockdown yes  # t.conf:1" },
    { "SshPorts 22,2222 8022-8023", "sshports 22,2222,8022-8023  # t.conf:1" },
    { "LockdownExempt yes", "lockdownexempt yes  # t.conf:1" },
    { "ListenerGuard no", "listenerguard no  # t.conf:1" },
    { "ConnectBackPinning no", "connectbackpinning no  # t.conf:1" },
    { "DetectSshBanner yes", "detectsshbanner yes  # t.conf:1" },
    { "LogRejections no", "logrejections no  # t.conf:1" },
    { "ServerMode yes", "servermode yes  # t.conf:1" },
    { "SftpOnly yes", "sftponly yes  # t.conf:1" },
    { "ServerPermitOpen intra:80 10.0.0.0/8:* [2001:db8::1]:8000-8999 "
      "[::ffff:10.1.2.3]:22",
      "serverpermitopen intra:80 10.0.0.0/8:* [2001:db8::1]:8000-8999 10.1.2.3:22  "
      "# t.conf:1" },
    { "ServerPermitOpen NONE", "serverpermitopen none  # t.conf:1" },
    { "ServerPermitOpen any", "serverpermitopen any  # t.conf:1" },
    { "SshdConfig /srv/ssh/sshd_config", "sshdconfig /srv/ssh/sshd_config  # t.conf:1" },
    { "sshdconfig \"/etc/ssh/my config\"",
      "sshdconfig \"/etc/ssh/my config\"  # t.conf:1" },
    { "SshdBinary /usr/local/sbin/sshd", "sshdbinary /usr/local/sbin/sshd  # t.conf:1" },
    { "SshdDropIn /etc/ssh/sshd_config.d/10-tg.conf",
      "sshddropin "
      "/etc/ssh/sshd_config.d/10-tg.conf  "
      "# t.conf:1" },
    { "SshdReload no", "sshdreload no  # t.conf:1" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(TgPolicy) policy = parse_ok(cases[i].line);
    g_autofree char *keyword =
        g_strndup(cases[i].effective, strcspn(cases[i].effective, " "));

    g_test_message("%s", cases[i].line);
    assert_effective(policy, NULL, keyword, cases[i].effective);
  }
}

typedef struct {
  const char *text;
  const char *message;
} BadCase;

static void
check_bad_cases(const BadCase *cases, gsize n_cases)
{
  for (gsize i = 0; i < n_cases; i++)
    assert_parse_error(cases[i].text, cases[i].message);
}

static void
test_bad_values(void)
{
  static const BadCase cases[] = {
    { "AllowTcpForwarding maybe", "t.conf:1: AllowTcpForwarding: invalid value 'maybe' "
                                  "(expected yes, all, no, local or remote)" },
    { "AllowStreamLocalForwarding 1",
      "t.conf:1: AllowStreamLocalForwarding: invalid "
      "value '1' (expected yes, all, no, local or remote)" },
    { "AllowDynamicForwarding all", "t.conf:1: AllowDynamicForwarding: invalid value "
                                    "'all' (expected no or yes)" },
    { "GatewayPorts client", "t.conf:1: GatewayPorts: invalid value 'client' (expected "
                             "no, yes or clientspecified)" },
    { "GatewayPorts yes no", "t.conf:1: GatewayPorts takes one argument, not 2" },
    { "GatewayPorts", "t.conf:1: GatewayPorts: missing value" },
    { "PermitOpen db.corp", "t.conf:1: PermitOpen: invalid value 'db.corp' (missing port "
                            "(expected host:port))" },
    { "PermitOpen db.corp:5432,db2:5432", "t.conf:1: PermitOpen: invalid value "
                                          "'db.corp:5432,db2:5432' (',' in an entry "
                                          "(separate entries with spaces))" },
    { "PermitOpen any db.corp:1", "t.conf:1: PermitOpen: 'any' and 'none' cannot be "
                                  "combined with other entries in the same block" },
    { "PermitOpen none\nPermitOpen db:1", "t.conf:2: PermitOpen: 'any' and 'none' cannot "
                                          "be combined with other entries in the same "
                                          "block" },
    { "PermitOpen any none", "t.conf:1: PermitOpen: 'any' and 'none' cannot be combined "
                             "with other entries in the same block" },
    { "PermitRemoteOpen 10.1.2.3/8:1",
      "t.conf:1: PermitRemoteOpen: invalid value "
      "'10.1.2.3/8:1' (host bits set in '10.1.2.3/8' (the "
      "network is 10.0.0.0/8))" },
    { "PermitListen localhost", "t.conf:1: PermitListen: invalid value 'localhost' "
                                "(invalid port 'localhost' (expected a number, a range "
                                "or '*'))" },
    { "PermitServer gw:0", "t.conf:1: PermitServer: invalid value 'gw:0' (port 0 is only "
                           "meaningful in PermitListen)" },
    { "MaxTunnels -1", "t.conf:1: MaxTunnels: invalid value '-1' (expected a number from "
                       "0 to 4294967295 or 'none')" },
    { "MaxTunnels 4294967296", "t.conf:1: MaxTunnels: invalid value '4294967296' "
                               "(expected a number from 0 to 4294967295 or 'none')" },
    { "MaxConnections ten", "t.conf:1: MaxConnections: invalid value 'ten' (expected a "
                            "number from 0 to 4294967295 or 'none')" },
    { "MaxLifetime 0", "t.conf:1: MaxLifetime: invalid value '0' (expected a time such "
                       "as 90, 30m or 1h30m, not 0, or 'none')" },
    { "MaxLifetime 5y", "t.conf:1: MaxLifetime: invalid value '5y' (expected a time such "
                        "as 90, 30m or 1h30m, not 0, or 'none')" },
    { "MaxLifetime h", "t.conf:1: MaxLifetime: invalid value 'h' (expected a time such "
                       "as 90, 30m or 1h30m, not 0, or 'none')" },
    { "IdleTimeout 99999999999", "t.conf:1: IdleTimeout: invalid value '99999999999' "
                                 "(expected a time such as 90, 30m or 1h30m, not 0, or "
                                 "'none')" },
    { "IdleTimeout 100000w", "t.conf:1: IdleTimeout: invalid value '100000w' (expected "
                             "a time such as 90, 30m or 1h30m, not 0, or 'none')" },
    { "HostKeyPolicy lax", "t.conf:1: HostKeyPolicy: invalid value 'lax' (expected "
                           "known-or-pinned, strict or pinned-only)" },
    { "SshPorts 22,,2222", "t.conf:1: SshPorts: invalid value '' (invalid port '' "
                           "(expected a number, a range or '*'))" },
    { "SshPorts 0", "t.conf:1: SshPorts: invalid value '0' (port 0 is only meaningful in "
                    "PermitListen)" },
    { "SshdDropIn relative.conf", "t.conf:1: SshdDropIn: invalid value 'relative.conf' "
                                  "(expected an absolute path)" },
    { "ListenerSources 10.0.0.0/8",
      "t.conf:1: ListenerSources takes single IP addresses (the firewall's listener "
      "sets hold addresses, not networks): 10.0.0.0/8" },
    { "ListenerSources 192.0.2.1\nListenerSources 2001:db8::/64",
      "t.conf:2: ListenerSources takes single IP addresses (the firewall's listener "
      "sets hold addresses, not networks): 2001:db8::/64" },
    { "ListenerSources ::ffff:10.0.0.0/104",
      "t.conf:1: ListenerSources takes single IP addresses (the firewall's listener "
      "sets hold addresses, not networks): ::ffff:10.0.0.0/104" },
    { "ListenerSources 192.0.2.1 gw.corp.example.com",
      "t.conf:1: ListenerSources takes single IP addresses, not host names (the daemon "
      "does not resolve them): gw.corp.example.com" },
    { "ListenerSources *", "t.conf:1: ListenerSources takes single IP addresses, not "
                           "wildcards ('any' allows every source): *" },
    { "ListenerSources 192.0.2.*", "t.conf:1: ListenerSources takes single IP addresses, "
                                   "not wildcards ('any' allows every source): "
                                   "192.0.2.*" },
    { "ListenerSources *.corp", "t.conf:1: ListenerSources takes single IP addresses, "
                                "not wildcards ('any' allows every source): *.corp" },
    { "ListenerSources 192.0.2.1:22", "t.conf:1: ListenerSources takes single IP "
                                      "addresses, without a port: 192.0.2.1:22" },
    { "ListenerSources [2001:db8::1]:22", "t.conf:1: ListenerSources takes single IP "
                                          "addresses, without a port: [2001:db8::1]:22" },
    { "ListenerSources 192.0.2.1,,192.0.2.2",
      "t.conf:1: ListenerSources: invalid value '192.0.2.1,,192.0.2.2' (empty entry "
      "between commas)" },
    { "ListenerSources 192.0.2.1,", "t.conf:1: ListenerSources: invalid value "
                                    "'192.0.2.1,' (empty entry between commas)" },
    { "ListenerSources 192.0.2.300", "t.conf:1: ListenerSources takes single IP "
                                     "addresses, not host names (the daemon does not "
                                     "resolve them): 192.0.2.300" },
    { "ListenerSources fe80::1%eth0", "t.conf:1: ListenerSources: invalid value "
                                      "'fe80::1%eth0' (invalid address 'fe80::1%eth0')" },
    { "ListenerSources 10.1.2.3/8", "t.conf:1: ListenerSources: invalid value "
                                    "'10.1.2.3/8' (host bits set in '10.1.2.3/8' (the "
                                    "network is 10.0.0.0/8))" },
    { "ListenerSources any,192.0.2.1", "t.conf:1: ListenerSources: 'any' and 'none' "
                                       "cannot be combined with other entries in the "
                                       "same block" },
    { "Match User a\n  ListenerSources none\n  ListenerSources 192.0.2.1",
      "t.conf:3: ListenerSources: 'any' and 'none' cannot be combined with other "
      "entries in the same block" },
    { "ListenerSources any none", "t.conf:1: ListenerSources: 'any' and 'none' cannot "
                                  "be combined with other entries in the same block" },
    { "ListenerSources", "t.conf:1: ListenerSources: missing value" },
    { "SftpOnly maybe",
      "t.conf:1: SftpOnly: invalid value 'maybe' (expected no or yes)" },
    { "ServerPermitOpen *", "t.conf:1: ServerPermitOpen: invalid value '*' (missing port "
                            "(expected host:port))" },
    /* The firewall holds addresses: it cannot list wildcards. */
    { "ServerPermitOpen *.intra:22",
      "t.conf:1: ServerPermitOpen: invalid value '*.intra:22' (the firewall holds "
      "addresses: names, addresses or networks, not wildcards ('any' allows every "
      "destination))" },
    { "ServerPermitOpen db:5432\nServerPermitOpen db?.corp:5432",
      "t.conf:2: ServerPermitOpen: invalid value 'db?.corp:5432' (the firewall holds "
      "addresses: names, addresses or networks, not wildcards ('any' allows every "
      "destination))" },
    { "Match Group jump\n  ServerPermitOpen *:443",
      "t.conf:2: ServerPermitOpen: invalid value '*:443' (the firewall holds "
      "addresses: names, addresses or networks, not wildcards ('any' allows every "
      "destination))" },
    { "ServerPermitOpen 10.1.2.3/8:22", "t.conf:1: ServerPermitOpen: invalid value "
                                        "'10.1.2.3/8:22' (host bits set in '10.1.2.3/8' "
                                        "(the network is 10.0.0.0/8))" },
    { "ServerPermitOpen none intra:80", "t.conf:1: ServerPermitOpen: 'any' and 'none' "
                                        "cannot be combined with other entries in the "
                                        "same block" },
    { "SshdConfig sshd_config", "t.conf:1: SshdConfig: invalid value 'sshd_config' "
                                "(expected an absolute path)" },
    { "# sshd\n\nSshdConfig ./etc/ssh/sshd_config",
      "t.conf:3: SshdConfig: invalid value './etc/ssh/sshd_config' (expected an absolute "
      "path)" },
    { "SshdConfig", "t.conf:1: SshdConfig: missing value" },
    { "SshdConfig /etc/ssh/sshd_config /etc/ssh/other",
      "t.conf:1: SshdConfig takes one argument, not 2" },
    { "SshdBinary sshd", "t.conf:1: SshdBinary: invalid value 'sshd' (expected an "
                         "absolute path)" },
    { "SshdBinary \"\"", "t.conf:1: SshdBinary: invalid value '' (expected an absolute "
                         "path)" },
    { "SshdBinary /usr/sbin/sshd -d", "t.conf:1: SshdBinary takes one argument, not 2" },
    { "SshdReload sometimes", "t.conf:1: SshdReload: invalid value 'sometimes' "
                              "(expected no or yes)" },
    { "ServerMode on", "t.conf:1: ServerMode: invalid value 'on' (expected no or yes)" },
    /* A repeated global line is ignored, but must be valid too. */
    { "SshdBinary /usr/sbin/sshd\nSshdBinary usr/sbin/sshd",
      "t.conf:2: SshdBinary: invalid value 'usr/sbin/sshd' (expected an absolute path)" },
    /* A repeated keyword is ignored, but still has to be valid. */
    { "GatewayPorts yes\nGatewayPorts sometimes", "t.conf:2: GatewayPorts: invalid value "
                                                  "'sometimes' (expected no, yes or "
                                                  "clientspecified)" },
  };

  check_bad_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_unknown_keyword(void)
{
  static const BadCase cases[] = {
    { "GatewayPorts no\nPermitOpn db:1", "t.conf:2: unknown keyword 'PermitOpn'" },
    { "X11Forwarding no", "t.conf:1: unknown keyword 'X11Forwarding'" },
    { "Include /etc/other.conf", "t.conf:1: unknown keyword 'Include'" },
    { "caf\xc3\xa9 1", "t.conf:1: unknown keyword 'caf\xc3\xa9'" },
  };

  check_bad_cases(cases, G_N_ELEMENTS(cases));
}

/* ---- Syntax --------------------------------------------------------------- */

static void
test_quotes_comments_case(void)
{
  static const ValueCase cases[] = {
    { "PermitOpen \"db.corp:5432\"", "permitopen db.corp:5432  # t.conf:1" },
    { "\"GatewayPorts\" \"yes\"", "gatewayports yes  # t.conf:1" },
    { "GatewayPorts=yes", "gatewayports yes  # t.conf:1" },
    { "GatewayPorts = yes", "gatewayports yes  # t.conf:1" },
    { "GatewayPorts\t=\tyes", "gatewayports yes  # t.conf:1" },
    { "gAtEwAyPoRtS YeS", "gatewayports yes  # t.conf:1" },
    { "  GatewayPorts yes   ", "gatewayports yes  # t.conf:1" },
    { "GatewayPorts yes\r", "gatewayports yes  # t.conf:1" },
    { "GatewayPorts yes # a comment", "gatewayports yes  # t.conf:1" },
    { "GatewayPorts yes #", "gatewayports yes  # t.conf:1" },
    { "# GatewayPorts yes\nGatewayPorts clientspecified",
      "gatewayports clientspecified  # t.conf:2" },
    { "\t# indented comment\n\n   \nGatewayPorts yes", "gatewayports yes  # t.conf:4" },
    /* '#' inside a word or quotes is not a comment */
    { "SshdDropIn /etc/a#b # comment", "sshddropin \"/etc/a#b\"  # t.conf:1" },
    { "SshdDropIn \"/etc/a b\"", "sshddropin \"/etc/a b\"  # t.conf:1" },
    { "SshdDropIn /etc/a\\ b", "sshddropin \"/etc/a b\"  # t.conf:1" },
    { "SshdDropIn \"/etc/a \\\"q\\\" \\\\\"", "sshddropin \"/etc/a \\\"q\\\" \\\\\"  "
                                              "# t.conf:1" },
    { "SshdDropIn /etc/x\"y z\"w", "sshddropin \"/etc/xy zw\"  # t.conf:1" },
    { "SshdDropIn /etc/back\\slash", "sshddropin \"/etc/back\\\\slash\"  # t.conf:1" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(TgPolicy) policy = NULL;
    g_autofree char *keyword =
        g_strndup(cases[i].effective, strcspn(cases[i].effective, " "));
    g_autofree char *escaped = g_strescape(cases[i].line, NULL);

    g_test_message("%s", escaped);
    policy = parse_ok(cases[i].line);
    assert_effective(policy, NULL, keyword, cases[i].effective);
  }
}

static void
test_syntax_errors(void)
{
  static const BadCase cases[] = {
    { "PermitOpen \"db.corp:5432", "t.conf:1: unterminated quote" },
    { "GatewayPorts \"yes", "t.conf:1: unterminated quote" },
    { "GatewayPorts \"\"", "t.conf:1: GatewayPorts: invalid value '' (expected no, yes "
                           "or clientspecified)" },
    { "GatewayPorts=", "t.conf:1: GatewayPorts: missing value" },
    { "=yes", "t.conf:1: unknown keyword ''" },
    { "GatewayPorts\x01yes", "t.conf:1: control character U+0001" },
    { "GatewayPorts yes\x1b[0m", "t.conf:1: control character U+001B" },
    { "GatewayPorts yes\x7f", "t.conf:1: control character U+007F" },
    { "# ok\nPermitOpen caf\xc3(:80", "t.conf:2: invalid UTF-8 at byte 14" },
    /* A blank inside quotes is part of the word. */
    { "PermitOpen a:1 \"\tb:2\"", "t.conf:1: PermitOpen: invalid value '\\u0009b:2' "
                                  "(invalid host '\tb' (letters, digits, '.', '_', '-', "
                                  "'*' and '?'))" },
  };

  check_bad_cases(cases, G_N_ELEMENTS(cases));
  /* NUL bytes are found wherever they are, with their line. */
  assert_parse_error_len("GatewayPorts yes\n# x\nGateway\0Ports no\n", 36,
                         "t.conf:3: NUL byte");
}

static void
test_binary_junk(void)
{
  g_autoptr(GRand) rand = g_rand_new_with_seed(42);

  /* Random bytes never crash the parser and every error names a line. */
  for (guint round = 0; round < 2000; round++) {
    gsize length = (gsize)g_rand_int_range(rand, 1, 300);
    g_autofree char *junk = g_malloc(length);
    g_autoptr(GError) error = NULL;
    g_autoptr(TgPolicy) policy = NULL;

    for (gsize i = 0; i < length; i++)
      junk[i] = (char)g_rand_int_range(rand, 0, 256);
    policy = tg_policy_parse_string("junk.conf", junk, (gssize)length, &error);
    if (policy != NULL)
      continue;
    g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
    g_assert_true(g_str_has_prefix(error->message, "junk.conf:"));
    g_assert_true(g_utf8_validate(error->message, -1, NULL));
  }
}

static void
test_long_lines(void)
{
  /* "SshdDropIn /" is 12 bytes; the path fills the line to the limit. */
  g_autofree char *path = g_strnfill(TG_CONFIG_MAX_LINE_LENGTH - 12, 'a');
  g_autofree char *longest = g_strdup_printf("# first\nSshdDropIn /%s\n", path);
  g_autofree char *too_long = g_strdup_printf("# first\nSshdDropIn /%sa\n", path);
  g_autofree char *comment_text = g_strnfill(TG_CONFIG_MAX_LINE_LENGTH - 1, 'c');
  g_autofree char *comment = g_strdup_printf("#%s", comment_text);
  g_autofree char *long_comment = g_strdup_printf("#%sc", comment_text);
  g_autoptr(TgPolicy) policy = parse_ok(longest);
  g_autoptr(GString) many = g_string_new("PermitOpen");
  g_autoptr(TgPolicy) many_policy = NULL;

  g_assert_cmpuint(strlen(longest), ==,
                   strlen("# first\n") + TG_CONFIG_MAX_LINE_LENGTH + 1);
  g_assert_nonnull(strstr(tg_policy_get_globals(policy)->sshd_drop_in, path));
  assert_parse_error(too_long, "t.conf:2: line longer than 16384 bytes");
  /* The limit is on lines, comments too. */
  g_clear_pointer(&policy, tg_policy_unref);
  policy = parse_ok(comment);
  assert_parse_error(long_comment, "t.conf:1: line longer than 16384 bytes");
  /* Just under the limit with many entries on one line. */
  while (many->len + strlen(" h0000.corp:1") <= TG_CONFIG_MAX_LINE_LENGTH)
    g_string_append_printf(many, " h%04u.corp:1", (guint)(many->len / 13));
  many_policy = parse_ok(many->str);
  g_assert_nonnull(many_policy);
  g_assert_cmpuint(many->len, >, TG_CONFIG_MAX_LINE_LENGTH - 13);
}

/* Lines of about 64 bytes: "PermitOpen host-000001.corp.example.com:443 ..." */
static GString *
big_policy_text(gsize size)
{
  GString *text = g_string_sized_new(size + 128);
  guint n = 0;

  while (text->len < size) {
    if (n % 16 == 0)
      g_string_append(text, "# a comment line among the entries, as real files have\n");
    g_string_append_printf(text,
                           "PermitOpen host-%06u.corp.example.com:443 10.%u.%u.0/24:22\n",
                           n, (n >> 8) & 255, n & 255);
    n++;
  }
  g_string_truncate(text, size);
  /* End on a whole line. */
  while (text->len > 0 && text->str[text->len - 1] != '\n')
    g_string_truncate(text, text->len - 1);
  return text;
}

static void
test_huge_files(void)
{
  g_autoptr(GString) ten = big_policy_text(10 * 1000 * 1000);
  g_autoptr(GString) limit = g_string_new(NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) policy =
      tg_policy_parse_string("big.conf", ten->str, (gssize)ten->len, &error);
  g_autofree char *dir = g_dir_make_tmp("tg-policy-XXXXXX", NULL);
  g_autofree char *path = g_build_filename(dir, "huge.conf", NULL);
  g_autofree char *message = NULL;
  g_autoptr(TgPolicy) from_file = NULL;
  const char *files[] = { path, NULL };
  g_autofree char *filler = g_strnfill(TG_CONFIG_MAX_FILE_SIZE, '#');
  g_autoptr(TgPolicy) exact = NULL;

  g_assert_no_error(error);
  g_assert_nonnull(policy);

  /* Exactly 16 MiB is fine; one byte more is refused, from memory or file. */
  for (gsize i = 1024; i <= TG_CONFIG_MAX_FILE_SIZE; i += 1024)
    filler[i - 1] = '\n';
  exact = tg_policy_parse_string("exact.conf", filler, TG_CONFIG_MAX_FILE_SIZE, &error);
  g_assert_no_error(error);
  g_assert_nonnull(exact);
  g_string_append_len(limit, filler, TG_CONFIG_MAX_FILE_SIZE);
  g_string_append_c(limit, '#');
  assert_parse_error_len(limit->str, (gssize)limit->len,
                         "t.conf: larger than 16777216 bytes");
  g_string_append_len(limit, filler, 1024 * 1024 - 1); /* 17 MiB */
  g_assert_true(g_file_set_contents(path, limit->str, (gssize)limit->len, NULL));
  from_file = tg_policy_load_files(files, &error);
  g_assert_null(from_file);
  message = g_strdup_printf("%s: larger than 16777216 bytes", path);
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_assert_cmpstr(error->message, ==, message);
  g_unlink(path);
  g_rmdir(dir);
}

/* ---- Match syntax ---------------------------------------------------------- */

static void
test_match_syntax_errors(void)
{
  static const BadCase cases[] = {
    { "Match", "t.conf:1: Match needs criteria (User, Group or All)" },
    { "Match User", "t.conf:1: Match User needs a pattern list" },
    { "Match Group dba User", "t.conf:1: Match User needs a pattern list" },
    { "Match Host gw", "t.conf:1: unknown Match criterion 'Host' (expected User, Group "
                       "or All)" },
    { "Match Address 10.0.0.0/8", "t.conf:1: unknown Match criterion 'Address' (expected "
                                  "User, Group or All)" },
    { "Match All User alice", "t.conf:1: Match All cannot be combined with other "
                              "criteria" },
    { "Match User alice All", "t.conf:1: Match All cannot be combined with other "
                              "criteria" },
    { "Match User a,,b", "t.conf:1: Match User: empty pattern in list 'a,,b'" },
    { "Match User alice,", "t.conf:1: Match User: empty pattern in list 'alice,'" },
    { "Match Group !", "t.conf:1: Match Group: empty pattern in list '!'" },
    { "Match User alice bob", "t.conf:1: unknown Match criterion 'bob' (expected User, "
                              "Group or All)" },
  };

  check_bad_cases(cases, G_N_ELEMENTS(cases));
}

static void
test_global_only_in_match(void)
{
  static const char *const global_only[] = {
    "EgressLockdown yes",     "SshPorts 22",         "ListenerGuard yes",
    "ConnectBackPinning yes", "DetectSshBanner yes", "LogRejections yes",
    "ServerMode yes",         "SshdDropIn /x",       "SshdReload yes",
    "SshdConfig /x",          "SshdBinary /x",
  };
  static const char *const per_user[] = {
    "AllowTcpForwarding no",
    "AllowStreamLocalForwarding no",
    "AllowDynamicForwarding no",
    "GatewayPorts yes",
    "ListenerSources none",
    "PermitOpen none",
    "PermitRemoteOpen none",
    "PermitListen none",
    "PermitServer none",
    "MaxTunnels 1",
    "MaxConnections 1",
    "MaxLifetime 1h",
    "IdleTimeout 1h",
    "HostKeyPolicy strict",
    "LockdownExempt yes",
    "SftpOnly yes",
    "ServerPermitOpen none",
  };

  for (gsize i = 0; i < G_N_ELEMENTS(global_only); i++) {
    g_autofree char *text = g_strdup_printf("Match All\n  %s\n", global_only[i]);
    g_autofree char *keyword = g_strndup(global_only[i], strcspn(global_only[i], " "));
    g_autofree char *message = g_strdup_printf(
        "t.conf:2: %s is not allowed in a Match block (global only)", keyword);
    g_autoptr(TgPolicy) global = parse_ok(global_only[i]);

    /* Fine in the global section, an error in a Match block. */
    g_assert_cmpuint(g_strv_length((char **)tg_policy_get_files(global)), ==, 1);
    assert_parse_error(text, message);
  }
  for (gsize i = 0; i < G_N_ELEMENTS(per_user); i++) {
    g_autofree char *text = g_strdup_printf("Match User alice\n  %s\n", per_user[i]);
    g_autoptr(TgPolicy) policy = parse_ok(text);

    g_assert_cmpuint(g_strv_length((char **)tg_policy_get_files(policy)), ==, 1);
  }
}

/* ---- Precedence ------------------------------------------------------------ */

static const char *const no_warnings[] = { NULL };

/* Every keyword is in force: none warns as reserved, or at all, when set
 * once. The dump of the built-in defaults sets every keyword. */
static void
test_no_keyword_is_reserved(void)
{
  static const char *const per_user[] = {
    "Match User alice\n  LockdownExempt yes\n  ListenerSources none",
    "Match Group sftponly\n  SftpOnly yes",
    "Match User alice\n  ListenerUsers owner group:devs user:backup",
    "Match Group jump,!contractors\n  ServerPermitOpen intra:80\n"
    "  ServerPermitOpen 10.20.0.0/16:22",
    "ServerPermitOpen none\nMatch Group jump\n  ServerPermitOpen any",
    "ServerMode yes\nSshdConfig /etc/ssh/sshd_config\nSshdBinary /usr/sbin/sshd\n"
    "SshdDropIn /etc/ssh/sshd_config.d/00-tunnelgate.conf\nSshdReload no",
  };
  g_autoptr(TgPolicy) empty = parse_ok("");
  g_autofree char *defaults = tg_policy_dump_effective(empty, NULL, FALSE);
  g_autoptr(TgPolicy) every = parse_ok(defaults);
  g_autofree char *again = tg_policy_dump_effective(every, NULL, FALSE);
  g_auto(GStrv) lines = g_strsplit(defaults, "\n", -1);

  /* All 38 keywords, each set once, none warning. */
  g_assert_cmpuint(g_strv_length(lines), ==, 38 + 1);
  assert_warnings(every, no_warnings);
  g_assert_cmpstr(again, ==, defaults);
  for (gsize i = 0; i < G_N_ELEMENTS(per_user); i++) {
    g_autoptr(TgPolicy) policy = parse_ok(per_user[i]);

    g_test_message("%s", per_user[i]);
    assert_warnings(policy, no_warnings);
  }
}

/* ListenerSources lines add up within a block (each address once), not
 * across blocks; a Match block overrides the global value. */
static void
test_listener_sources_lines(void)
{
  g_autoptr(TgPolicy) policy = parse_ok("ListenerSources 192.0.2.1,192.0.2.2\n"
                                        "GatewayPorts yes\n"
                                        "ListenerSources 2001:db8::5 192.0.2.1\n"
                                        "listenersources ::ffff:192.0.2.2,192.0.2.3\n"
                                        "Match Group ops\n"
                                        "  ListenerSources none\n"
                                        "Match User alice\n"
                                        "  ListenerSources 198.51.100.7\n"
                                        "  ListenerSources 198.51.100.8\n"
                                        "Match User bob\n"
                                        "  ListenerSources any\n");
  const char *ops_groups[] = { "carol", "ops", NULL };
  g_autoptr(TgPolicySubject) alice = tg_policy_subject_new("alice", 1000, NULL);
  g_autoptr(TgPolicySubject) bob = tg_policy_subject_new("bob", 1001, NULL);
  g_autoptr(TgPolicySubject) carol = tg_policy_subject_new("carol", 1002, ops_groups);
  g_autoptr(TgPolicySubject) dave = tg_policy_subject_new("dave", 1003, NULL);

  assert_effective(
      policy, NULL, "listenersources",
      "listenersources 192.0.2.1 192.0.2.2 2001:db8::5 192.0.2.3  # t.conf:1");
  assert_effective(
      policy, dave, "listenersources",
      "listenersources 192.0.2.1 192.0.2.2 2001:db8::5 192.0.2.3  # t.conf:1");
  assert_effective(policy, alice, "listenersources",
                   "listenersources 198.51.100.7 198.51.100.8  # t.conf:8");
  assert_effective(policy, bob, "listenersources", "listenersources any  # t.conf:11");
  assert_effective(policy, carol, "listenersources", "listenersources none  # t.conf:6");
  assert_warnings(policy, no_warnings);
}

static void
test_first_value_wins_in_file(void)
{
  g_autoptr(TgPolicy) policy = parse_ok("GatewayPorts yes\n"
                                        "GatewayPorts clientspecified\n"
                                        "MaxTunnels 3\n"
                                        "maxtunnels 5\n");
  static const char *const warnings[] = {
    "t.conf:2: GatewayPorts ignored: already set in this block at line 1",
    "t.conf:4: MaxTunnels ignored: already set in this block at line 3",
    NULL,
  };

  assert_effective(policy, NULL, "gatewayports", "gatewayports yes  # t.conf:1");
  assert_effective(policy, NULL, "maxtunnels", "maxtunnels 3  # t.conf:3");
  assert_warnings(policy, warnings);
}

/* Thousands of ignored lines give a thousand warnings and a count. */
static void
test_warnings_are_bounded(void)
{
  g_autoptr(GString) text = g_string_new("GatewayPorts yes\n");
  g_autoptr(TgPolicy) policy = NULL;
  const char *const *warnings;

  for (guint i = 0; i < 5000; i++)
    g_string_append(text, "GatewayPorts no\n");
  policy = parse_ok(text->str);
  warnings = tg_policy_get_warnings(policy);
  g_assert_cmpuint(g_strv_length((char **)warnings), ==, 1001);
  g_assert_cmpstr(warnings[0], ==,
                  "t.conf:2: GatewayPorts ignored: already set in this block at line 1");
  g_assert_cmpstr(warnings[1000], ==, "(4000 more warnings not shown)");
}

static void
test_list_keywords_add_up_in_block(void)
{
  g_autoptr(TgPolicy) policy = parse_ok("PermitOpen a:1\n"
                                        "GatewayPorts yes\n"
                                        "PermitOpen b:2 c:3\n"
                                        "Match User alice\n"
                                        "  PermitOpen d:4\n"
                                        "  PermitOpen e:5\n"
                                        "Match User alice\n"
                                        "  PermitOpen f:6\n");
  g_autoptr(TgPolicySubject) alice = tg_policy_subject_new("alice", 1000, NULL);

  assert_effective(policy, NULL, "permitopen", "permitopen a:1 b:2 c:3  # t.conf:1");
  /* Only the first matching block's lines, not the second's or global's. */
  assert_effective(policy, alice, "permitopen", "permitopen d:4 e:5  # t.conf:5");
  assert_warnings(policy, no_warnings);
}

static void
test_match_beats_global(void)
{
  g_autoptr(TgPolicy) policy = parse_ok("GatewayPorts clientspecified\n"
                                        "Match Group dba\n"
                                        "  GatewayPorts yes\n"
                                        "  MaxTunnels 9\n"
                                        "Match User alice\n"
                                        "  GatewayPorts no\n"
                                        "  IdleTimeout 1h\n"
                                        "Match All\n"
                                        "  MaxTunnels 1\n");
  const char *alice_groups[] = { "alice", "dba", NULL };
  g_autoptr(TgPolicySubject) alice = tg_policy_subject_new("alice", 1000, alice_groups);
  g_autoptr(TgPolicySubject) bob = tg_policy_subject_new("bob", 1001, NULL);

  /* alice: the first matching block that sets each keyword. */
  assert_effective(policy, alice, "gatewayports", "gatewayports yes  # t.conf:3");
  assert_effective(policy, alice, "maxtunnels", "maxtunnels 9  # t.conf:4");
  assert_effective(policy, alice, "idletimeout", "idletimeout 3600  # t.conf:7");
  /* bob: Match All beats the global line; the rest is global or default. */
  assert_effective(policy, bob, "gatewayports",
                   "gatewayports clientspecified  # t.conf:1");
  assert_effective(policy, bob, "maxtunnels", "maxtunnels 1  # t.conf:9");
  assert_effective(policy, bob, "idletimeout", "idletimeout none  # <default>");
  /* No subject: only Match All applies. */
  assert_effective(policy, NULL, "maxtunnels", "maxtunnels 1  # t.conf:9");
}

/* A temporary /etc/tunnelgate lookalike. */
typedef struct {
  char *root;
  char *default_file;
  char *main_file;
  char *dropin_dir;
} PolicyTree;

static void
policy_tree_init(PolicyTree *tree)
{
  tree->root = g_dir_make_tmp("tg-policy-XXXXXX", NULL);
  g_assert_nonnull(tree->root);
  tree->default_file = g_build_filename(tree->root, "default.conf", NULL);
  tree->main_file = g_build_filename(tree->root, "policy.conf", NULL);
  tree->dropin_dir = g_build_filename(tree->root, "policy.d", NULL);
  g_assert_cmpint(g_mkdir(tree->dropin_dir, 0755), ==, 0);
}

static char *
policy_tree_write(PolicyTree *tree, const char *name, const char *text)
{
  char *path = g_build_filename(tree->root, name, NULL);

  g_assert_true(g_file_set_contents(path, text, -1, NULL));
  return path;
}

static void
policy_tree_clear(PolicyTree *tree)
{
  if (tree->root != NULL)
    tg_test_remove_tree(tree->root);
  g_free(tree->root);
  g_free(tree->default_file);
  g_free(tree->main_file);
  g_free(tree->dropin_dir);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(PolicyTree, policy_tree_clear)

static TgPolicy *
policy_tree_load(PolicyTree *tree)
{
  g_autoptr(GError) error = NULL;
  TgPolicy *policy =
      tg_policy_load(tree->default_file, tree->main_file, tree->dropin_dir, &error);

  g_assert_no_error(error);
  g_assert_nonnull(policy);
  return policy;
}

static void
test_file_order(void)
{
  g_auto(PolicyTree) tree = { 0 };
  g_autoptr(TgPolicy) policy = NULL;
  g_autofree char *d10 = NULL, *d9 = NULL, *main_file = NULL, *default_file = NULL;
  g_autofree char *hidden = NULL, *backup = NULL;
  const char *const *files;

  policy_tree_init(&tree);
  default_file = policy_tree_write(&tree, "default.conf",
                                   "GatewayPorts no\n"
                                   "MaxTunnels 1\n"
                                   "MaxConnections 1\n"
                                   "IdleTimeout 1m\n"
                                   "PermitOpen z:1\n");
  main_file = policy_tree_write(&tree, "policy.conf",
                                "MaxTunnels 2\n"
                                "MaxConnections 2\n"
                                "PermitOpen y:1\n");
  /* Byte order: "10-..." sorts before "9-...". */
  d10 = policy_tree_write(&tree, "policy.d/10-site.conf", "MaxTunnels 10\n");
  d9 = policy_tree_write(&tree, "policy.d/9-team.conf",
                         "MaxTunnels 9\n"
                         "MaxConnections 9\n");
  /* Not *.conf, or hidden: not read. */
  hidden = policy_tree_write(&tree, "policy.d/.hidden.conf", "MaxTunnels 100\n");
  backup = policy_tree_write(&tree, "policy.d/10-site.conf.bak", "MaxTunnels 100\n");
  policy = policy_tree_load(&tree);

  files = tg_policy_get_files(policy);
  g_assert_cmpuint(g_strv_length((char **)files), ==, 4);
  g_assert_cmpstr(files[0], ==, d10);
  g_assert_cmpstr(files[1], ==, d9);
  g_assert_cmpstr(files[2], ==, main_file);
  g_assert_cmpstr(files[3], ==, default_file);
  {
    g_autofree char *tunnels = g_strdup_printf("maxtunnels 10  # %s:1", d10);
    g_autofree char *connections = g_strdup_printf("maxconnections 9  # %s:2", d9);
    g_autofree char *idle = g_strdup_printf("idletimeout 60  # %s:4", default_file);
    g_autofree char *open = g_strdup_printf("permitopen y:1  # %s:3", main_file);
    g_autofree char *w1 =
        g_strdup_printf("%s:1: MaxTunnels ignored: already set at %s:1", d9, d10);
    g_autofree char *w2 =
        g_strdup_printf("%s:1: MaxTunnels ignored: already set at %s:1", main_file, d10);
    g_autofree char *w3 = g_strdup_printf(
        "%s:2: MaxConnections ignored: already set at %s:2", main_file, d9);
    g_autofree char *w4 = g_strdup_printf("%s:2: MaxTunnels ignored: already set at %s:1",
                                          default_file, d10);
    g_autofree char *w5 = g_strdup_printf(
        "%s:3: MaxConnections ignored: already set at %s:2", default_file, d9);
    g_autofree char *w6 = g_strdup_printf("%s:5: PermitOpen ignored: already set at %s:3",
                                          default_file, main_file);
    const char *warnings[] = { w1, w2, w3, w4, w5, w6, NULL };

    assert_effective(policy, NULL, "maxtunnels", tunnels);
    assert_effective(policy, NULL, "maxconnections", connections);
    assert_effective(policy, NULL, "idletimeout", idle);
    /* List keywords do not add up across files: z:1 is not allowed. */
    assert_effective(policy, NULL, "permitopen", open);
    assert_warnings(policy, warnings);
  }
}

/* A Match block beats every global line, even one in a file that comes
 * first; among Match blocks, the first (in file order) that matches. */
static void
test_match_beats_global_across_files(void)
{
  g_auto(PolicyTree) tree = { 0 };
  g_autoptr(TgPolicy) policy = NULL;
  g_autofree char *dropin = NULL, *main_file = NULL;
  g_autoptr(TgPolicySubject) alice = tg_policy_subject_new("alice", 1000, NULL);
  g_autoptr(TgPolicySubject) bob = tg_policy_subject_new("bob", 1001, NULL);
  g_autofree char *alice_line = NULL, *bob_line = NULL, *alice_open = NULL;

  policy_tree_init(&tree);
  dropin = policy_tree_write(&tree, "policy.d/50-x.conf",
                             "GatewayPorts no\n"
                             "Match User alice\n"
                             "  PermitOpen a:1\n");
  main_file = policy_tree_write(&tree, "policy.conf",
                                "Match All\n"
                                "  GatewayPorts yes\n"
                                "  PermitOpen b:1\n");
  policy = policy_tree_load(&tree);
  alice_line = g_strdup_printf("gatewayports yes  # %s:2", main_file);
  bob_line = g_strdup_printf("permitopen b:1  # %s:3", main_file);
  alice_open = g_strdup_printf("permitopen a:1  # %s:3", dropin);
  assert_effective(policy, alice, "gatewayports", alice_line);
  assert_effective(policy, bob, "gatewayports", alice_line);
  assert_effective(policy, alice, "permitopen", alice_open);
  assert_effective(policy, bob, "permitopen", bob_line);
  assert_warnings(policy, no_warnings);
}

static void
test_missing_files(void)
{
  g_auto(PolicyTree) tree = { 0 };
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) none = tg_policy_load(NULL, NULL, NULL, &error);
  g_autoptr(TgPolicy) missing = NULL;

  g_assert_no_error(error);
  g_assert_cmpuint(g_strv_length((char **)tg_policy_get_files(none)), ==, 0);
  assert_effective(none, NULL, "permitopen", "permitopen any  # <default>");
  policy_tree_init(&tree);
  g_rmdir(tree.dropin_dir);
  missing = policy_tree_load(&tree);
  g_assert_cmpuint(g_strv_length((char **)tg_policy_get_files(missing)), ==, 0);
  assert_warnings(missing, no_warnings);
}

static void
assert_load_error(PolicyTree *tree, const char *message)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) policy =
      tg_policy_load(tree->default_file, tree->main_file, tree->dropin_dir, &error);

  g_assert_null(policy);
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_assert_cmpstr(error->message, ==, message);
}

static void
test_load_errors(void)
{
  g_auto(PolicyTree) tree = { 0 };
  g_autofree char *broken = NULL, *message = NULL, *dangling = NULL, *fifo = NULL;
  g_autofree char *missing = NULL;
  g_autoptr(GError) error = NULL;
  const char *files[2] = { NULL, NULL };

  policy_tree_init(&tree);
  /* A broken drop-in names its file and line. */
  broken = policy_tree_write(&tree, "policy.d/20-broken.conf", "# ok\nGatewayPort yes\n");
  message = g_strdup_printf("%s:2: unknown keyword 'GatewayPort'", broken);
  assert_load_error(&tree, message);
  g_unlink(broken);
  g_clear_pointer(&message, g_free);

  /* The main file is a directory. */
  g_assert_cmpint(g_mkdir(tree.main_file, 0755), ==, 0);
  message = g_strdup_printf("%s: not a regular file", tree.main_file);
  assert_load_error(&tree, message);
  g_rmdir(tree.main_file);
  g_clear_pointer(&message, g_free);

  /* A drop-in that dangles might have been the one that forbids. */
  dangling = g_build_filename(tree.dropin_dir, "30-gone.conf", NULL);
  g_assert_cmpint(symlink("/nonexistent/tunnelgate.conf", dangling), ==, 0);
  message = g_strdup_printf("%s: cannot open: No such file or directory", dangling);
  assert_load_error(&tree, message);
  g_unlink(dangling);
  g_clear_pointer(&message, g_free);

  /* A FIFO must not hang the daemon. */
  fifo = g_build_filename(tree.dropin_dir, "40-fifo.conf", NULL);
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
  message = g_strdup_printf("%s: not a regular file", fifo);
  assert_load_error(&tree, message);
  g_unlink(fifo);
  g_clear_pointer(&message, g_free);

  /* Explicit files must exist. */
  missing = g_build_filename(tree.root, "missing.conf", NULL);
  files[0] = missing;
  g_assert_null(tg_policy_load_files(files, &error));
  message = g_strdup_printf("%s: cannot open: No such file or directory", missing);
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_assert_cmpstr(error->message, ==, message);
}

/* Checked as an unprivileged user: as root, a forked child drops to
 * nobody first (root reads every file). */
static void
test_unreadable_file(void)
{
  g_auto(PolicyTree) tree = { 0 };
  g_autofree char *path = NULL, *message = NULL;
  pid_t child;
  int status = 0;

  policy_tree_init(&tree);
  g_assert_cmpint(g_chmod(tree.root, 0755), ==, 0);
  path = policy_tree_write(&tree, "policy.conf", "GatewayPorts yes\n");
  g_assert_cmpint(g_chmod(path, 0), ==, 0);
  message = g_strdup_printf("%s: cannot open: Permission denied", path);
  if (geteuid() != 0) {
    assert_load_error(&tree, message);
    return;
  }
  child = fork();
  g_assert_cmpint(child, >=, 0);
  if (child == 0) {
    if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0)
      _exit(2);
    assert_load_error(&tree, message);
    /* _exit() skips the cleanups, so valgrind would call these lost. */
    g_clear_pointer(&message, g_free);
    g_clear_pointer(&path, g_free);
    _exit(0);
  }
  g_assert_cmpint(waitpid(child, &status, 0), ==, child);
  g_assert_true(WIFEXITED(status));
  g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

static void
test_validate(void)
{
  g_auto(PolicyTree) tree = { 0 };
  g_autofree char *first = NULL, *second = NULL, *report = NULL, *expected = NULL;
  g_autoptr(GError) error = NULL;
  const char *files[3] = { NULL, NULL, NULL };

  policy_tree_init(&tree);
  first = policy_tree_write(&tree, "a.conf",
                            "EgressLockdown yes\nServerMode yes\nMaxTunnels 2\n");
  second = policy_tree_write(&tree, "b.conf", "MaxTunnels 3\n");
  files[0] = first;
  files[1] = second;
  g_assert_true(tg_policy_validate(files, &report, &error));
  g_assert_no_error(error);
  expected =
      g_strdup_printf("%s:1: MaxTunnels ignored: already set at %s:3\n", second, first);
  g_assert_cmpstr(report, ==, expected);
  g_free(second);
  second = policy_tree_write(&tree, "b.conf", "MaxTunnels three\n");
  files[1] = second;
  g_clear_pointer(&report, g_free);
  g_assert_false(tg_policy_validate(files, &report, &error));
  g_assert_null(report);
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
}

/* ---- The shipped files ------------------------------------------------------ */

/* The source tree is compiled in (TG_SOURCE_ROOT), so these tests always
 * run, wherever the binary is started from. */
static char *
source_path(const char *relative)
{
  return g_build_filename(TG_SOURCE_ROOT, relative, NULL);
}

/* The shipped default changes nothing: every value is the built-in one. */
static void
test_shipped_default(void)
{
  g_autofree char *path = source_path("data/policy.conf");
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) policy = NULL;
  g_autoptr(TgPolicy) empty = parse_ok("");
  g_autofree char *dump = NULL, *default_dump = NULL;
  const char *files[2] = { path, NULL };

  policy = tg_policy_load_files(files, &error);
  g_assert_no_error(error);
  assert_warnings(policy, no_warnings);
  dump = tg_policy_dump_effective(policy, NULL, TRUE);
  default_dump = tg_policy_dump_effective(empty, NULL, TRUE);
  g_assert_cmpstr(dump, ==, default_dump);
}

static void
test_examples(void)
{
  static const char *const examples[] = { "workstation", "enterprise-lockdown",
                                          "sftp-only-server", "jump-host" };
  g_autofree char *dir = source_path("data/examples");

  for (gsize i = 0; i < G_N_ELEMENTS(examples); i++) {
    g_autofree char *name = g_strconcat(examples[i], ".conf", NULL);
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GError) error = NULL;
    const char *files[2] = { path, NULL };
    g_autoptr(TgPolicy) policy = tg_policy_load_files(files, &error);

    g_test_message("%s", path);
    g_assert_no_error(error);
    g_assert_nonnull(policy);
    /* Nothing in an example is ignored or reserved: no warnings at all. */
    assert_warnings(policy, no_warnings);
  }
}

/* The examples mean what their comments say. */
static void
test_example_decisions(void)
{
  static const struct {
    const char *example;
    const char *user;
    const char *groups[4];
    const char *forward;
    gboolean allowed;
  } cases[] = {
    { "workstation",
      "dev",
      { "dev", NULL },
      "L 8080:api.dev.corp.example.com:443",
      TRUE },
    { "workstation",
      "dev",
      { "dev", NULL },
      "L 8080:pg.db.prod.corp.example.com:5432",
      FALSE },
    { "workstation", "dev", { "dev", NULL }, "R 8080:localhost:80", FALSE },
    { "workstation",
      "ops",
      { "ops", "oncall", NULL },
      "L 0.0.0.0:5432:pg.db.prod.corp.example.com:5432",
      TRUE },
    { "enterprise-lockdown",
      "eve",
      { "eve", NULL },
      "L 5432:db1.corp.example.com:5432",
      FALSE },
    { "enterprise-lockdown",
      "dan",
      { "dan", "dba", NULL },
      "L 5432:db1.corp.example.com:5432",
      TRUE },
    { "enterprise-lockdown",
      "con",
      { "con", "dba", "contractors" },
      "L 5432:db1.corp.example.com:5432",
      FALSE },
    { "enterprise-lockdown", "dan", { "dan", "dba", NULL }, "L 22:10.1.1.1:22", FALSE },
    { "enterprise-lockdown",
      "net",
      { "net", "neteng", NULL },
      "R 10022:localhost:22",
      TRUE },
    { "sftp-only-server", "sam", { "sam", "sftponly", NULL }, "L 1:localhost:22", FALSE },
    { "sftp-only-server",
      "root",
      { "root", "sysadmin", NULL },
      "L 1:localhost:22",
      TRUE },
  };
  g_autofree char *dir = source_path("data/examples");

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *name = g_strconcat(cases[i].example, ".conf", NULL);
    g_autofree char *path = g_build_filename(dir, name, NULL);
    const char *files[2] = { path, NULL };
    g_autoptr(TgPolicy) policy = tg_policy_load_files(files, NULL);
    g_autoptr(TgPolicySubject) subject =
        tg_policy_subject_new(cases[i].user, 1000, cases[i].groups);
    g_autoptr(TgForward) forward = tg_forward_parse(cases[i].forward, NULL);
    g_autoptr(TgPolicyDecision) decision =
        tg_policy_check_forward(policy, subject, forward);

    g_test_message("%s, %s: %s", cases[i].example, cases[i].user, decision->reason);
    g_assert_cmpint(decision->allowed, ==, cases[i].allowed);
  }
}

static TgPolicy *
load_example(const char *example)
{
  g_autofree char *name = g_strconcat(example, ".conf", NULL);
  g_autofree char *path =
      g_build_filename(TG_SOURCE_ROOT, "data", "examples", name, NULL);
  const char *files[2] = { path, NULL };
  g_autoptr(GError) error = NULL;
  TgPolicy *policy = tg_policy_load_files(files, &error);

  g_assert_no_error(error);
  return policy;
}

/* The server-mode examples mean what their comments say. */
static void
test_example_server_mode(void)
{
  static const struct {
    const char *example;
    const char *groups[4]; /* the user is the first */
    gboolean sftp_only;
    const char *destination; /* host:port, for ServerPermitOpen */
    guint16 port;
    gboolean allowed;
  } cases[] = {
    { "sftp-only-server", { "sam", "sftponly", NULL }, TRUE, "intra", 80, TRUE },
    { "sftp-only-server", { "root", "sysadmin", NULL }, FALSE, "intra", 80, TRUE },
    { "sftp-only-server", { "web", NULL }, FALSE, "intra", 80, TRUE },
    { "jump-host", { "op", "operators", NULL }, FALSE, "10.20.1.1", 443, TRUE },
    { "jump-host", { "op", "operators", NULL }, FALSE, "10.20.1.1", 80, FALSE },
    { "jump-host",
      { "op", "operators", NULL },
      FALSE,
      "bastion.internal.example.com",
      22,
      TRUE },
    { "jump-host",
      { "c", "contractors", NULL },
      FALSE,
      "app1.internal.example.com",
      22,
      TRUE },
    /* a contractor in another group too: the contractors block comes first */
    { "jump-host",
      { "c", "operators", "contractors", NULL },
      FALSE,
      "10.20.1.1",
      22,
      FALSE },
    { "jump-host",
      { "dev", "jump", "developers", NULL },
      FALSE,
      "10.20.30.7",
      8080,
      TRUE },
    { "jump-host",
      { "dev", "jump", "developers", NULL },
      FALSE,
      "10.20.30.7",
      22,
      FALSE },
    { "jump-host",
      { "j", "jump", NULL },
      FALSE,
      "intra.internal.example.com",
      80,
      FALSE },
    { "jump-host", { "joe", NULL }, FALSE, "anything.example.org", 25, TRUE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(TgPolicy) policy = load_example(cases[i].example);
    g_autoptr(TgPolicySubject) subject =
        tg_policy_subject_new(cases[i].groups[0], 1000, cases[i].groups);
    g_autoptr(TgPolicyDecision) decision = tg_policy_check_server_permit_open(
        policy, subject, cases[i].destination, cases[i].port);

    g_test_message("%s, %s: %s", cases[i].example, cases[i].groups[0], decision->reason);
    g_assert_true(tg_policy_get_globals(policy)->server_mode);
    g_assert_cmpint(tg_policy_is_sftp_only(policy, subject, NULL), ==,
                    cases[i].sftp_only);
    g_assert_cmpint(decision->allowed, ==, cases[i].allowed);
  }
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/policy-parser/keyword-values", test_keyword_values);
  g_test_add_func("/policy-parser/bad-values", test_bad_values);
  g_test_add_func("/policy-parser/unknown-keyword", test_unknown_keyword);
  g_test_add_func("/policy-parser/quotes-comments-case", test_quotes_comments_case);
  g_test_add_func("/policy-parser/syntax-errors", test_syntax_errors);
  g_test_add_func("/policy-parser/binary-junk", test_binary_junk);
  g_test_add_func("/policy-parser/long-lines", test_long_lines);
  g_test_add_func("/policy-parser/huge-files", test_huge_files);
  g_test_add_func("/policy-parser/match-syntax-errors", test_match_syntax_errors);
  g_test_add_func("/policy-parser/global-only-in-match", test_global_only_in_match);
  g_test_add_func("/policy-parser/no-keyword-is-reserved", test_no_keyword_is_reserved);
  g_test_add_func("/policy-parser/listener-sources-lines", test_listener_sources_lines);
  g_test_add_func("/policy-parser/first-value-wins-in-file",
                  test_first_value_wins_in_file);
  g_test_add_func("/policy-parser/warnings-are-bounded", test_warnings_are_bounded);
  g_test_add_func("/policy-parser/list-keywords-add-up-in-block",
                  test_list_keywords_add_up_in_block);
  g_test_add_func("/policy-parser/match-beats-global", test_match_beats_global);
  g_test_add_func("/policy-parser/file-order", test_file_order);
  g_test_add_func("/policy-parser/match-beats-global-across-files",
                  test_match_beats_global_across_files);
  g_test_add_func("/policy-parser/missing-files", test_missing_files);
  g_test_add_func("/policy-parser/load-errors", test_load_errors);
  g_test_add_func("/policy-parser/unreadable-file", test_unreadable_file);
  g_test_add_func("/policy-parser/validate", test_validate);
  g_test_add_func("/policy-parser/shipped-default", test_shipped_default);
  g_test_add_func("/policy-parser/examples", test_examples);
  g_test_add_func("/policy-parser/example-decisions", test_example_decisions);
  g_test_add_func("/policy-parser/example-server-mode", test_example_server_mode);
  return g_test_run();
}
