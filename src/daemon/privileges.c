/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "privileges.h"

#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const int kept_capabilities[] = {
  CAP_SETUID, CAP_SETGID, CAP_KILL, CAP_NET_ADMIN, CAP_NET_BIND_SERVICE,
};

static gboolean
is_kept(int capability)
{
  for (gsize i = 0; i < G_N_ELEMENTS(kept_capabilities); i++) {
    if (kept_capabilities[i] == capability)
      return TRUE;
  }
  return FALSE;
}

static int
last_capability(void)
{
  g_autofree char *text = NULL;

  if (g_file_get_contents("/proc/sys/kernel/cap_last_cap", &text, NULL, NULL))
    return (int)g_ascii_strtoll(text, NULL, 10);
  return CAP_LAST_CAP;
}

gboolean
tg_privileges_drop(GError **error)
{
  struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
  struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { { 0 } };
  struct __user_cap_data_struct current[_LINUX_CAPABILITY_U32S_3] = { { 0 } };
  int last = last_capability();

  if (geteuid() != 0)
    return TRUE; /* tests and development builds run unprivileged parts */

  /* only what the bounding set still holds: dropping needs CAP_SETPCAP,
   * which a unit's CapabilityBoundingSet= (ours) has already taken away
   * along with the rest */
  for (int capability = 0; capability <= last; capability++) {
    if (!is_kept(capability) && prctl(PR_CAPBSET_READ, capability, 0, 0, 0) == 1 &&
        prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 && errno != EINVAL) {
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                  "Cannot drop capability %d from the bounding set: %s", capability,
                  g_strerror(errno));
      return FALSE;
    }
  }
  /* what we were given of the kept ones: a daemon started without, say,
   * CAP_NET_ADMIN runs, and the part that needs it (the firewall) says so */
  if (syscall(SYS_capget, &header, current) != 0) {
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                "Cannot read capabilities: %s", g_strerror(errno));
    return FALSE;
  }
  for (gsize i = 0; i < G_N_ELEMENTS(kept_capabilities); i++) {
    int capability = kept_capabilities[i];
    if ((current[CAP_TO_INDEX(capability)].permitted & CAP_TO_MASK(capability)) == 0)
      continue;
    data[CAP_TO_INDEX(capability)].effective |= CAP_TO_MASK(capability);
    data[CAP_TO_INDEX(capability)].permitted |= CAP_TO_MASK(capability);
  }
  if (syscall(SYS_capset, &header, data) != 0) {
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                "Cannot restrict capabilities: %s", g_strerror(errno));
    return FALSE;
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                "Cannot set no-new-privileges: %s", g_strerror(errno));
    return FALSE;
  }
  /* keys of tunnels live in memory: no core file, no ptrace or
   * /proc/PID/mem for anyone without CAP_SYS_PTRACE */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                "Cannot make the process non-dumpable: %s", g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}
