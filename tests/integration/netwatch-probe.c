/* SPDX-License-Identifier: GPL-2.0-or-later */
/* tg-netwatch-probe: the daemon's netwatch (src/daemon/netwatch.c) on its
 * own, for test_netwatch.py; never installed. It prints "ready" (and its
 * unique bus name, with --bus), then a line per event:
 *
 *   event network-changed CAUSE
 *   event sleeping CAUSE
 *   event resumed CAUSE
 *
 * and answers commands on stdin, one per line:
 *
 *   holds?    "holds yes" or "holds no" (tg_netwatch_holds_inhibitor())
 *   release   tg_netwatch_release_sleep(), then "released"
 *   quit      frees everything and exits 0 (so does the end of stdin)
 *
 * Options: --bus ADDRESS (where logind is; without it, the network only),
 * --inhibit (hold a delay sleep inhibitor). The netwatch's log goes to
 * stderr (G_MESSAGES_DEBUG=tunnelgate for its debug lines). */
#include <gio/gio.h>
#include <stdio.h>

#include "netwatch.h"

static GMainLoop *loop;

static void
on_event(TgNetwatchEvent event, const char *cause, gpointer user_data)
{
  static const char *const names[] = { "network-changed", "sleeping", "resumed" };

  printf("event %s %s\n", names[event], cause);
  fflush(stdout);
}

static gboolean
on_command(GIOChannel *channel, GIOCondition condition, gpointer user_data)
{
  TgNetwatch *netwatch = user_data;
  g_autofree char *line = NULL;
  GIOStatus status = g_io_channel_read_line(channel, &line, NULL, NULL, NULL);

  if (status == G_IO_STATUS_AGAIN)
    return G_SOURCE_CONTINUE;
  if (status != G_IO_STATUS_NORMAL || g_str_equal(g_strstrip(line), "quit")) {
    g_main_loop_quit(loop);
    return G_SOURCE_CONTINUE; /* removed by main() */
  }
  if (g_str_equal(line, "holds?")) {
    printf("holds %s\n", tg_netwatch_holds_inhibitor(netwatch) ? "yes" : "no");
  } else if (g_str_equal(line, "release")) {
    tg_netwatch_release_sleep(netwatch);
    printf("released\n");
  } else {
    printf("error unknown command %s\n", line);
  }
  fflush(stdout);
  return G_SOURCE_CONTINUE;
}

int
main(int argc, char **argv)
{
  g_autofree char *address = NULL;
  gboolean inhibit = FALSE;
  GOptionEntry entries[] = { { "bus", 0, 0, G_OPTION_ARG_STRING, &address,
                               "The bus logind is on", "ADDRESS" },
                             { "inhibit", 0, 0, G_OPTION_ARG_NONE, &inhibit,
                               "Hold a delay sleep inhibitor", NULL },
                             { NULL } };
  g_autoptr(GOptionContext) context = g_option_context_new("- watch the network");
  g_autoptr(GError) error = NULL;
  g_autoptr(GDBusConnection) bus = NULL;
  TgNetwatch *netwatch;
  GIOChannel *input;
  guint input_watch;

  g_log_writer_default_set_use_stderr(TRUE); /* stdout is for events and answers */
  g_option_context_add_main_entries(context, entries, NULL);
  if (!g_option_context_parse(context, &argc, &argv, &error)) {
    g_printerr("%s\n", error->message);
    return 2;
  }
  if (address != NULL) {
    bus = g_dbus_connection_new_for_address_sync(
        address,
        G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
            G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
        NULL, NULL, &error);
    if (bus == NULL) {
      g_printerr("Cannot connect to %s: %s\n", address, error->message);
      return 1;
    }
    g_dbus_connection_set_exit_on_close(bus, FALSE);
  }
  netwatch = tg_netwatch_new(bus, inhibit, on_event, NULL, &error);
  if (netwatch == NULL) {
    g_printerr("%s\n", error->message);
    return 1;
  }

  loop = g_main_loop_new(NULL, FALSE);
  input = g_io_channel_unix_new(0);
  input_watch =
      g_io_add_watch(input, G_IO_IN | G_IO_HUP | G_IO_ERR, on_command, netwatch);
  printf("ready%s%s\n", bus != NULL ? " " : "",
         bus != NULL ? g_dbus_connection_get_unique_name(bus) : "");
  fflush(stdout);
  g_main_loop_run(loop);

  g_source_remove(input_watch);
  g_io_channel_unref(input);
  tg_netwatch_free(netwatch);
  /* what freeing cancelled reports back through the main context */
  while (g_main_context_iteration(NULL, FALSE))
    ;
  if (bus != NULL)
    g_dbus_connection_close_sync(bus, NULL, NULL);
  g_main_loop_unref(loop);
  return 0;
}
