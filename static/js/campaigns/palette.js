// The Mandelbrot demos' palette: colour stops from the outside in (points inside the set are
// black, chosen by each demo's color()).

/** @type {Array<[number, number[]]>} Palette stops: position 0..1, RGB. */
const STOPS = [
  [0.0, [8, 10, 40]],
  [0.16, [32, 107, 203]],
  [0.42, [237, 255, 255]],
  [0.6425, [255, 170, 0]],
  [0.8575, [120, 20, 0]],
  [1.0, [8, 10, 40]],
];

/**
 * The palette's colour at position `t` (0..1), interpolated between its stops.
 * @param {number} t
 * @returns {number[]}
 */
export function paletteAt(t) {
  for (let i = 1; i < STOPS.length; i++) {
    if (t <= STOPS[i][0]) {
      const [t0, c0] = STOPS[i - 1];
      const [t1, c1] = STOPS[i];
      const f = (t - t0) / (t1 - t0);
      return c0.map((v, k) => Math.round(v + (c1[k] - v) * f));
    }
  }
  return STOPS[STOPS.length - 1][1];
}
