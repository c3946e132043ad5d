/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "tg-error.h"

#include <gio/gio.h>

static const GDBusErrorEntry tg_error_entries[] = {
  { TG_ERROR_FAILED, "org.tunnelgate.Error.Failed" },
  { TG_ERROR_INVALID_ARGUMENT, "org.tunnelgate.Error.InvalidArgument" },
  { TG_ERROR_NOT_AUTHORIZED, "org.tunnelgate.Error.NotAuthorized" },
  { TG_ERROR_POLICY_DENIED, "org.tunnelgate.Error.PolicyDenied" },
  { TG_ERROR_HOST_KEY_UNKNOWN, "org.tunnelgate.Error.HostKeyUnknown" },
  { TG_ERROR_HOST_KEY_CHANGED, "org.tunnelgate.Error.HostKeyChanged" },
  { TG_ERROR_AUTHENTICATION_FAILED, "org.tunnelgate.Error.AuthenticationFailed" },
  { TG_ERROR_CONNECT_FAILED, "org.tunnelgate.Error.ConnectFailed" },
  { TG_ERROR_LIMIT_EXCEEDED, "org.tunnelgate.Error.LimitExceeded" },
  { TG_ERROR_NOT_FOUND, "org.tunnelgate.Error.NotFound" },
  { TG_ERROR_ADDRESS_IN_USE, "org.tunnelgate.Error.AddressInUse" },
  { TG_ERROR_NOT_SUPPORTED, "org.tunnelgate.Error.NotSupported" },
  { TG_ERROR_DISCONNECTED, "org.tunnelgate.Error.Disconnected" },
};

G_STATIC_ASSERT(G_N_ELEMENTS(tg_error_entries) == TG_ERROR_N_ERRORS);

GQuark
tg_error_quark(void)
{
  static gsize quark = 0;

  g_dbus_error_register_error_domain("tg-error-quark", &quark, tg_error_entries,
                                     G_N_ELEMENTS(tg_error_entries));
  return (GQuark)quark;
}
