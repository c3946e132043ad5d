/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The a{sv} option dictionaries of the daemon's methods (OpenTunnel's
 * options, SetCredentials' credentials): typed values, descriptors carried
 * by the message, and the four credential options every such dictionary
 * spells the same way. */
#pragma once

#include <gio/gio.h>

/* FALSE with InvalidArgument naming @key when @value is not of @type. */
gboolean tg_option_has_type(const char *key, GVariant *value, const char *type,
                            GError **error);

/* The descriptor an "h" option refers to, taken from the message (-1 with
 * InvalidArgument when the message does not carry it). */
int tg_option_take_fd(GDBusMethodInvocation *invocation, const char *key, GVariant *value,
                      GError **error);

/* agent, agent-fd, identity, identity-fd */
gboolean tg_option_is_credential(const char *key);

/* One credential option into its place: a path (absolute, or
 * InvalidArgument) replaces *agent_path or *identity_path, a descriptor
 * *agent_fd or *identity_fd (an old one is closed). */
gboolean tg_option_parse_credential(GDBusMethodInvocation *invocation, const char *key,
                                    GVariant *value, char **agent_path, int *agent_fd,
                                    char **identity_path, int *identity_fd,
                                    GError **error);
