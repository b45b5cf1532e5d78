// CPU throttle as a duty cycle: a hand that ran a task for t ms rests t * (1 - d) / d ms
// before its next task, so over time it computes a fraction d of the wall time. Resting is a
// timer per hand (setTimeout), never a busy loop, and a hand with nothing to do just waits
// for the next message from the server.

export const MIN_DUTY = 0.05;

/** A duty cycle from a percentage (5..100) or a fraction (0.05..1). */
export function toDuty(value) {
  let d = Number(value);
  if (!Number.isFinite(d) || d <= 0) return 1;
  if (d > 1) d /= 100;
  return Math.min(1, Math.max(MIN_DUTY, d));
}

/** How long a hand rests after a task of `ranMs` at duty cycle `duty`. */
export function restMs(ranMs, duty) {
  const d = toDuty(duty);
  if (d >= 1 || !(ranMs > 0)) return 0;
  return (ranMs * (1 - d)) / d;
}
