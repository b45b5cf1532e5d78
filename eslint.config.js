// eslint (flat config) over the browser code and its Node unit tests: `make lint`.
// static/vendor is third-party code copied as published, and is not linted.
import js from "@eslint/js";
import globals from "globals";

export default [
  // templates/ holds JavaScript with template tags in it (the embed snippet): not plain JS.
  { ignores: ["static/vendor/**", "node_modules/**", ".venv/**", "var/**", "kernels/**", "templates/**"] },
  js.configs.recommended,
  {
    files: ["static/js/**/*.js"],
    languageOptions: { ecmaVersion: 2023, sourceType: "module", globals: { ...globals.browser } },
    rules: {
      // Unused arguments document a callback's signature; unused variables are mistakes.
      "no-unused-vars": ["error", { args: "none", caughtErrors: "none", ignoreRestSiblings: true }],
      eqeqeq: ["error", "always", { null: "ignore" }],
      "no-var": "error",
      "prefer-const": "error",
    },
  },
  {
    // Dedicated workers: their global scope is `self`, not `window`.
    files: ["static/js/worker/js_worker.js", "static/js/worker/wasm_worker.js", "static/js/worker/gpu_worker.js"],
    languageOptions: { globals: { ...globals.worker } },
  },
  {
    files: ["tests/browser/js/**/*.mjs", "eslint.config.js"],
    languageOptions: { ecmaVersion: 2023, sourceType: "module", globals: { ...globals.node } },
  },
];
