/* tunnelgatectl: what the verbs share. Each group of verbs lives in its own
 * file (ctl-policy.c: check-policy; ctl-bus.c: the verbs that ask the daemon) and is
 * listed once, in the verb table of tunnelgatectl.c. */
#pragma once

#include <glib.h>

/* Exit statuses, as `tunnelgatectl --help` documents them. */
typedef enum {
  CTL_EXIT_OK = 0,
  CTL_EXIT_FAILURE = 1, /* invalid policy, bad usage, unknown user... */
  CTL_EXIT_BUS = 2,     /* the daemon could not be reached or returned an error */
} CtlExit;

/* A verb gets its own name in argv[0] and its arguments after it, and
 * returns a CtlExit. */
typedef int (*CtlVerbFunc)(int argc, char **argv);

/* "tunnelgatectl: message" on stderr. */
void ctl_error(const char *format, ...) G_GNUC_PRINTF(1, 2);

/* Parses a verb's options with GOption: `tunnelgatectl VERB --help` shows
 * them, and a usage error is reported (naming the verb) as FALSE. */
gboolean ctl_parse_options(const char *verb, const char *parameters,
                           const char *description, const GOptionEntry *entries,
                           int *argc, char ***argv);

/* ctl-policy.c */
int ctl_check_policy(int argc, char **argv);

/* ctl-bus.c: verbs that ask the daemon */
int ctl_firewall(int argc, char **argv);
int ctl_audit(int argc, char **argv);
