/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Test hooks of the firewall; not for the daemon. */
#pragma once

#include "firewall.h"

/* The next batch gets one more message the kernel refuses (deleting a set that
 * does not exist) at its end: proves that a failed batch changes nothing. */
void tg_firewall_test_poison_next_batch(TgFirewall *firewall);
