/* SPDX-License-Identifier: GPL-2.0-or-later */
/* tunnelgate error domain: every D-Bus error the daemon returns.
 * The names are public (SPEC.md): org.tunnelgate.Error.<Name>. */
#pragma once

#include <glib.h>

#define TG_ERROR (tg_error_quark())

typedef enum {
  TG_ERROR_FAILED,
  TG_ERROR_INVALID_ARGUMENT,
  TG_ERROR_NOT_AUTHORIZED,
  TG_ERROR_POLICY_DENIED,
  TG_ERROR_HOST_KEY_UNKNOWN,
  TG_ERROR_HOST_KEY_CHANGED,
  TG_ERROR_AUTHENTICATION_FAILED,
  TG_ERROR_CONNECT_FAILED,
  TG_ERROR_LIMIT_EXCEEDED,
  TG_ERROR_NOT_FOUND,
  TG_ERROR_ADDRESS_IN_USE,
  TG_ERROR_NOT_SUPPORTED,
  TG_ERROR_DISCONNECTED,
} TgError;

#define TG_ERROR_N_ERRORS (TG_ERROR_DISCONNECTED + 1)

GQuark tg_error_quark(void);
