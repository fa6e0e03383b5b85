// Light, dark or the system's choice (prefers-color-scheme), remembered in localStorage. A classic script loaded
// in <head> (not a module: modules are deferred), so the page's first paint already has the chosen theme.
// `<html data-theme="light|dark">` forces a theme; without it app.css follows the system. Any element with a
// `data-theme-toggle` attribute gets the Theme picker.
(() => {
  const KEY = "chatsite-theme";
  const CHOICES = [
    ["system", "System"],
    ["light", "Light"],
    ["dark", "Dark"],
  ];

  function stored() {
    try {
      const value = window.localStorage.getItem(KEY);
      return value === "light" || value === "dark" ? value : "system";
    } catch {
      return "system"; // storage refused (privacy settings): follow the system
    }
  }

  function apply(choice) {
    if (choice === "system") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = choice;
  }

  function choose(choice) {
    try {
      if (choice === "system") window.localStorage.removeItem(KEY);
      else window.localStorage.setItem(KEY, choice);
    } catch {
      // not remembered, still applied
    }
    apply(choice);
  }

  function picker(container, index) {
    const label = document.createElement("label");
    label.className = "theme-label";
    label.htmlFor = `theme-picker-${index}`;
    label.textContent = "Theme";
    const select = document.createElement("select");
    select.id = `theme-picker-${index}`;
    select.className = "theme-picker";
    for (const [value, text] of CHOICES) select.append(new Option(text, value));
    select.value = stored();
    select.addEventListener("change", () => choose(select.value));
    container.append(label, select);
  }

  apply(stored());
  // Another tab changed it.
  window.addEventListener("storage", (event) => {
    if (event.key !== KEY) return;
    apply(stored());
    for (const select of document.querySelectorAll(".theme-picker")) select.value = stored();
  });
  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-theme-toggle]").forEach(picker);
  });
})();
