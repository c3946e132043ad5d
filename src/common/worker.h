/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Blocking work off the D-Bus thread, on a thread of its own that ends with
 * the work: name resolution, server mode's user walk and sshd runs.
 *
 * Not GLib's shared pool: a pool thread outlives the work, keeping glibc's
 * per-thread resolver context and GLib's per-thread caches, and may still be
 * busy when the daemon exits. Every worker thread is joined, either by the
 * next tg_worker_run() once it is done or by tg_worker_join_all() at exit,
 * so nothing of a worker is left when the daemon ends. */
#pragma once

#include <gio/gio.h>

/* Runs @func(@task, source, task data, cancellable) on a new thread, which
 * must return the task's result (g_task_return_*: the callback runs in the
 * task's main context). When no thread can be made (out of threads or
 * memory), the task returns that error at once instead: no abort. */
void tg_worker_run(GTask *task, GTaskThreadFunc func);

/* Waits for every worker thread started so far to end. For the daemon's
 * exit, after what the workers report to is done with them. */
void tg_worker_join_all(void);
