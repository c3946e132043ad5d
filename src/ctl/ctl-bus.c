/* The verbs that ask the daemon: one system-bus call each, with polkit's
 * interactive authorization allowed (an administrator at a terminal may be
 * asked for a password by their agent). */
#include <gio/gio.h>
#include <stdio.h>

#include "ctl.h"

#define BUS_NAME "org.tunnelgate.TunnelGate1"
#define MANAGER_PATH "/org/tunnelgate/TunnelGate1"
#define MANAGER_INTERFACE "org.tunnelgate.Manager1"
#define CALL_TIMEOUT_MS (120 * 1000)

/* Manager1.method(parameters) on the system bus ($DBUS_SYSTEM_BUS_ADDRESS
 * when set); NULL after printing why. */
static GVariant *
call_manager(const char *method, GVariant *parameters, const GVariantType *reply_type)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GDBusConnection) bus = g_bus_get_sync(G_BUS_TYPE_SYSTEM, NULL, &error);
  GVariant *reply;

  if (bus == NULL) {
    ctl_error("cannot connect to the system bus: %s", error->message);
    if (parameters != NULL)
      g_variant_unref(g_variant_ref_sink(parameters));
    return NULL;
  }
  reply = g_dbus_connection_call_sync(
      bus, BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, method, parameters, reply_type,
      G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, CALL_TIMEOUT_MS, NULL, &error);
  if (reply == NULL) {
    g_autofree char *name = g_dbus_error_get_remote_error(error);

    g_dbus_error_strip_remote_error(error);
    ctl_error("%s: %s%s%s%s", method, error->message, name != NULL ? " (" : "",
              name != NULL ? name : "", name != NULL ? ")" : "");
  }
  return reply;
}

int
ctl_firewall(int argc, char **argv)
{
  GOptionEntry entries[] = { { NULL } };
  g_autoptr(GVariant) reply = NULL;
  const char *text;

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
  reply = call_manager("GetFirewall", NULL, G_VARIANT_TYPE("(s)"));
  if (reply == NULL)
    return CTL_EXIT_BUS;
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
  reply = call_manager("Audit", NULL, G_VARIANT_TYPE("(a(sss))"));
  if (reply == NULL)
    return CTL_EXIT_BUS;
  g_variant_get(reply, "(a(sss))", &findings);
  while (g_variant_iter_next(findings, "(&s&s&s)", &user, &setting, &value)) {
    printf("%s\t%s\t%s\n", user, setting, value);
    n++;
  }
  if (n == 0)
    printf("no drift: sshd allows no forwarding to any SFTP-only user\n");
  return n == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
}
