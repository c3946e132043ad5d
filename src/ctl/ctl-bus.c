/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Talking to tunnelgated: the system-bus connection, method calls with
 * polkit's interactive authorization allowed (an administrator at a terminal
 * may be asked for a password by their agent), errors and exit statuses,
 * tunnel names; and the verbs that are one call each (firewall, audit). */
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "text.h"
#include "tg-error.h"

GDBusConnection *
ctl_bus(void)
{
  static GDBusConnection *bus;
  g_autoptr(GError) error = NULL;

  if (bus != NULL)
    return bus;
  /* Registers the daemon's error names with GDBus before the first reply
   * arrives, so that errors come back as TG_ERROR codes. */
  (void)TG_ERROR;
  bus = g_bus_get_sync(G_BUS_TYPE_SYSTEM, NULL, &error);
  if (bus == NULL)
    ctl_error("cannot connect to the system bus: %s", error->message);
  return bus;
}

/* Errors that say the request itself cannot succeed: the caller must change
 * it (exit status 1). Everything else is the daemon's or the system's (2).
 * The daemon's errors arrive in TG_ERROR (tg-error.c registers the domain
 * with GDBus, so the remote names map back to their codes). */
static int
exit_status_for(const GError *error)
{
  static const int request_errors[] = {
    TG_ERROR_INVALID_ARGUMENT, TG_ERROR_POLICY_DENIED, TG_ERROR_LIMIT_EXCEEDED,
    TG_ERROR_NOT_FOUND,        TG_ERROR_NOT_SUPPORTED, TG_ERROR_ADDRESS_IN_USE,
  };

  if (g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_INVALID_ARGS))
    return CTL_EXIT_FAILURE;
  if (error->domain != TG_ERROR)
    return CTL_EXIT_BUS; /* the bus's or a local error: timeout, lost connection */
  for (gsize i = 0; i < G_N_ELEMENTS(request_errors); i++) {
    if (error->code == request_errors[i])
      return CTL_EXIT_FAILURE;
  }
  return CTL_EXIT_BUS;
}

int
ctl_report_error(const char *what, GError *error)
{
  g_autofree char *name = g_dbus_error_get_remote_error(error);

  g_dbus_error_strip_remote_error(error);
  tg_text_error_printable(error); /* it may quote an SSH server */
  if (g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_SERVICE_UNKNOWN) ||
      g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_NAME_HAS_NO_OWNER))
    ctl_error("%s: tunnelgated is not running: %s (%s)", what, error->message, name);
  else
    ctl_error("%s: %s%s%s%s", what, error->message, name != NULL ? " (" : "",
              name != NULL ? name : "", name != NULL ? ")" : "");
  return exit_status_for(error);
}

/* A tunnel object that is not there: GDBus answers for the daemon that
 * nothing is registered at the path. */
static gboolean
is_missing_object(GError *error)
{
  return g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD) ||
         g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_OBJECT) ||
         g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_INTERFACE);
}

GVariant *
ctl_call(const char *path, const char *interface, const char *method,
         GVariant *parameters, const GVariantType *reply_type, int *status)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) arguments = parameters != NULL ? g_variant_ref_sink(parameters) : NULL;
  GDBusConnection *bus = ctl_bus();
  const char *tunnel = NULL;
  GVariant *reply;

  if (bus == NULL) {
    *status = CTL_EXIT_BUS;
    return NULL;
  }
  reply = g_dbus_connection_call_sync(bus, TG_BUS_NAME, path, interface, method,
                                      arguments, reply_type,
                                      G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION,
                                      CTL_CALL_TIMEOUT_MS, NULL, &error);
  if (reply != NULL) {
    *status = CTL_EXIT_OK;
    return reply;
  }
  /* the tunnel the call is about: its object, or CloseTunnel's argument */
  if (g_str_has_prefix(path, TG_TUNNEL_PATH_PREFIX))
    tunnel = path;
  else if (g_str_equal(method, "CloseTunnel"))
    g_variant_get(arguments, "(&o)", &tunnel);
  if (tunnel != NULL &&
      (is_missing_object(error) || g_dbus_error_is_remote_error(error))) {
    g_autofree char *name = g_dbus_error_get_remote_error(error);

    if (is_missing_object(error) || g_strcmp0(name, TG_ERROR_PREFIX "NotFound") == 0) {
      ctl_error("no tunnel %s (%s)", ctl_tunnel_id(tunnel), name != NULL ? name : "unknown");
      *status = CTL_EXIT_FAILURE;
      return NULL;
    }
  }
  *status = ctl_report_error(method, error);
  /* the daemon answers a tunnel that does not exist as it answers another
   * user's: say both, since it will not tell which */
  if (tunnel != NULL && g_error_matches(error, TG_ERROR, TG_ERROR_NOT_AUTHORIZED) &&
      strstr(error->message, TG_ACTION_ID_MANAGE) != NULL)
    ctl_error("no tunnel %s of yours: another user's, or none (the daemon tells which "
              "only to callers allowed %s)",
              ctl_tunnel_id(tunnel), TG_ACTION_ID_MANAGE);
  return NULL;
}

const char *
ctl_tunnel_id(const char *path)
{
  const char *slash = strrchr(path, '/');

  return slash != NULL ? slash + 1 : path;
}

char *
ctl_tunnel_path(const char *id_or_path)
{
  if (g_str_has_prefix(id_or_path, TG_TUNNEL_PATH_PREFIX) &&
      g_variant_is_object_path(id_or_path) &&
      strchr(id_or_path + strlen(TG_TUNNEL_PATH_PREFIX), '/') == NULL)
    return g_strdup(id_or_path);
  if (id_or_path[0] != '\0' && strspn(id_or_path, "0123456789") == strlen(id_or_path))
    return g_strconcat(TG_TUNNEL_PATH_PREFIX, id_or_path, NULL);
  ctl_error("'%s' is not a tunnel: give its ID (as 'tunnelgatectl list' shows it) or "
            "its object path " TG_TUNNEL_PATH_PREFIX "ID",
            id_or_path);
  return NULL;
}

int
ctl_firewall(int argc, char **argv)
{
  GOptionEntry entries[] = { { NULL } };
  g_autoptr(GVariant) reply = NULL;
  const char *text;
  int status;

  if (!ctl_parse_options("firewall", "",
                         "Prints the live nftables table inet tunnelgate as the daemon "
                         "keeps it: the lockdown switches, SSH ports and servers, exempt "
                         "uids, each guarded listener with the tunnel it belongs to, and "
                         "the rejection counters. Needs polkit's org.tunnelgate.manage.",
                         entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc > 1) {
    ctl_error("firewall takes no arguments");
    return CTL_EXIT_FAILURE;
  }
  reply = ctl_call(TG_MANAGER_PATH, TG_MANAGER_INTERFACE, "GetFirewall", NULL,
                   G_VARIANT_TYPE("(s)"), &status);
  if (reply == NULL)
    return status;
  g_variant_get(reply, "(&s)", &text);
  fputs(text, stdout);
  return CTL_EXIT_OK;
}

int
ctl_audit(int argc, char **argv)
{
  GOptionEntry entries[] = { { NULL } };
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariantIter) findings = NULL;
  const char *user, *setting, *value;
  guint n = 0;
  int status;

  if (!ctl_parse_options(
          "audit", "",
          "Server mode: checks the effective sshd configuration of every "
          "SFTP-only user (sshd -T) and prints each kind of forwarding sshd "
          "still allows them (the kernel blocks it anyway), and a drop-in "
          "that sshd -t refused. Exit status 0 when all is as the policy "
          "wants, 1 when something was found. Needs polkit's "
          "org.tunnelgate.manage.",
          entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc > 1) {
    ctl_error("audit takes no arguments");
    return CTL_EXIT_FAILURE;
  }
  reply = ctl_call(TG_MANAGER_PATH, TG_MANAGER_INTERFACE, "Audit", NULL,
                   G_VARIANT_TYPE("(a(sss))"), &status);
  if (reply == NULL)
    return status;
  g_variant_get(reply, "(a(sss))", &findings);
  while (g_variant_iter_next(findings, "(&s&s&s)", &user, &setting, &value)) {
    printf("%s\t%s\t%s\n", user, setting, value);
    n++;
  }
  if (n == 0)
    printf("no drift: sshd allows no forwarding to any SFTP-only user\n");
  return n == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
}
