/* SPDX-License-Identifier: GPL-2.0-or-later */
/* tunnelgatectl: the command line of tunnelgate.
 *
 *   tunnelgatectl [--help | --version] VERB [ARGUMENT...]
 *
 * Options before the verb belong to tunnelgatectl, the rest to the verb,
 * which parses them itself (ctl_parse_options()). A verb is one line in
 * the table below and a function in the file of its group. */
#include <locale.h>
#include <stdio.h>

#include "config.h"
#include "ctl.h"

typedef struct {
  const char *name;
  const char *parameters; /* as in the usage line */
  const char *summary;    /* one line of --help */
  CtlVerbFunc run;
} CtlVerb;

static const CtlVerb verbs[] = {
  { "open", "[user@]host[:port] -L|-R|-D SPEC… | @PROFILE",
    "Open a tunnel with your ssh-agent or key; wait until it is up, print its ports",
    ctl_open },
  { "close", "ID…", "Close tunnels", ctl_close },
  { "list", "[--json]", "List the tunnels you may see", ctl_list },
  { "show", "[--json] ID", "Show every property of a tunnel", ctl_show },
  { "watch", "[--count N]", "Print tunnel events (state, traffic) as they happen",
    ctl_watch },
  { "forward", "add|remove ID SPEC…", "Add forwards to a tunnel, or remove them",
    ctl_forward },
  { "credentials", "[--identity FILE] ID…",
    "Give reconnecting tunnels your ssh-agent (or key) again, e.g. a new agent",
    ctl_credentials },
  { "check", "[user@]host[:port] SPEC…",
    "Would the policy allow these forwards? Prints why (file:line)", ctl_check },
  { "reload", "", "Make the daemon read the policy again", ctl_reload },
  { "check-policy", "[FILE…]",
    "Validate the policy like sshd -t; with --user, show a user's like sshd -T",
    ctl_check_policy },
  { "firewall", "", "Show the live firewall table and the tunnel of each element",
    ctl_firewall },
  { "audit", "", "Server mode: show the forwarding sshd still allows SFTP-only users",
    ctl_audit },
};

static const CtlVerb *
find_verb(const char *name)
{
  for (gsize i = 0; i < G_N_ELEMENTS(verbs); i++) {
    if (g_str_equal(verbs[i].name, name))
      return &verbs[i];
  }
  return NULL;
}

/* The verb list for --help, names and parameters aligned. */
static char *
describe_verbs(void)
{
  GString *out = g_string_new("Verbs:");

  for (gsize i = 0; i < G_N_ELEMENTS(verbs); i++) {
    g_autofree char *call = g_strdup_printf("%s %s", verbs[i].name, verbs[i].parameters);

    g_string_append_printf(out, "\n  %s\n      %s", call, verbs[i].summary);
  }
  return g_string_free(out, FALSE);
}

static const char exit_statuses[] =
    "Run 'tunnelgatectl VERB --help' for the options of a verb.\n"
    "\n"
    "Exit status:\n"
    "  0  success\n"
    "  1  invalid policy, bad usage, or an unknown user\n"
    "     also: the daemon refused the request itself (InvalidArgument,\n"
    "     PolicyDenied, LimitExceeded, NotFound, NotSupported, AddressInUse),\n"
    "     no such tunnel, 'check' denied, 'audit' found drift\n"
    "  2  the daemon could not be reached, or it returned an error\n"
    "     (any other: NotAuthorized by polkit, ConnectFailed, HostKeyUnknown,\n"
    "     AuthenticationFailed, Failed, ...)\n"
    "Errors name the D-Bus error; denials name the policy file:line or the\n"
    "polkit action that refused. See doc/cli.md.\n";

/* Options before the verb; stops at the verb (strict POSIX), leaving it
 * and its arguments in argv. */
static gboolean
parse_global_options(int *argc, char ***argv, gboolean *version)
{
  GOptionEntry entries[] = {
    { "version", 0, 0, G_OPTION_ARG_NONE, version, "Print the version", NULL },
    { NULL },
  };
  g_autoptr(GOptionContext) context = g_option_context_new("VERB [ARGUMENT…]");
  g_autoptr(GError) error = NULL;
  g_autofree char *verb_list = describe_verbs();

  g_option_context_set_strict_posix(context, TRUE);
  g_option_context_add_main_entries(context, entries, NULL);
  g_option_context_set_summary(context, verb_list);
  g_option_context_set_description(context, exit_statuses);
  if (!g_option_context_parse(context, argc, argv, &error)) {
    ctl_error("%s", error->message);
    ctl_error("try 'tunnelgatectl --help'");
    return FALSE;
  }
  return TRUE;
}

int
main(int argc, char **argv)
{
  gboolean version = FALSE;
  const CtlVerb *verb;

  setlocale(LC_ALL, "");
  g_set_prgname("tunnelgatectl");

  if (!parse_global_options(&argc, &argv, &version))
    return CTL_EXIT_FAILURE;
  if (version) {
    printf("tunnelgatectl %s\n", PACKAGE_VERSION);
    return CTL_EXIT_OK;
  }
  if (argc < 2) {
    ctl_error("no verb given; try 'tunnelgatectl --help'");
    return CTL_EXIT_FAILURE;
  }
  verb = find_verb(argv[1]);
  if (verb == NULL) {
    ctl_error("unknown verb '%s'; try 'tunnelgatectl --help'", argv[1]);
    return CTL_EXIT_FAILURE;
  }
  return verb->run(argc - 1, argv + 1);
}
