/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Logging. Audit events use G_LOG_LEVEL_MESSAGE (journal priority notice), which
 * GLib never filters; debug output needs --verbose. Everything goes through GLib's
 * structured logging: under systemd (stderr connected to the journal) GLib's default
 * writer sends the fields natively to journald, so every event is a structured journal
 * entry with TG_EVENT and the fields below; elsewhere the message goes to stderr. Field
 * names (journal): TG_EVENT, TUNNEL_ID, USER, UID, FORWARD, DESTINATION, DECISION, RULE,
 * RESULT, METHOD, BYTES, PEER.
 * Values are strings. */
#pragma once

#include <glib.h>

#define TG_LOG_DOMAIN "tunnelgate"

/* tg_log_event(G_LOG_LEVEL_MESSAGE, "TUNNEL_UP", "TUNNEL_ID", id, ...,
 *              "MESSAGE", "format", args...);  — MESSAGE must come last. */
#define tg_log_event(level, event, ...)                                                  \
  g_log_structured(TG_LOG_DOMAIN, level, "TG_EVENT", event, __VA_ARGS__)

#define tg_debug(...) g_log(TG_LOG_DOMAIN, G_LOG_LEVEL_DEBUG, __VA_ARGS__)
#define tg_info(...) g_log(TG_LOG_DOMAIN, G_LOG_LEVEL_INFO, __VA_ARGS__)
#define tg_message(...) g_log(TG_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, __VA_ARGS__)
#define tg_warning(...) g_log(TG_LOG_DOMAIN, G_LOG_LEVEL_WARNING, __VA_ARGS__)
