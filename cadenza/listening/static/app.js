// The listening test page: no framework, no build step, nothing fetched from elsewhere.
// The server knows the listener by a signed cookie and holds every answer; this page only
// plays the clips of the current trial and unlocks the answer once each has played to its end.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const HEARD_SHARE = 0.9; // the share of a clip that must have been played (the server checks it too)
  let config = null;
  let listener = null;
  let current = 0;
  let shownAt = 0;
  let players = [];

  async function api(method, path, body) {
    const options = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
    }
    return data;
  }

  function show(id) {
    for (const section of ["intro", "trial", "done", "error"]) {
      $(section).hidden = section !== id;
    }
  }

  function fail(error) {
    stopAll();
    $("error-text").textContent = `Something went wrong: ${error.message}. Reload the page to continue.`;
    show("error");
  }

  function say(text) {
    $("status").textContent = text;
  }

  function stopAll() {
    for (const p of players) {
      p.audio.pause();
      p.audio.removeAttribute("src");
      p.audio.load();
    }
    players = [];
  }

  function playedSeconds(audio) {
    let total = 0;
    for (let i = 0; i < audio.played.length; i++) {
      total += audio.played.end(i) - audio.played.start(i);
    }
    return total;
  }

  function answered(k) {
    return Object.prototype.hasOwnProperty.call(listener.answers, String(k));
  }

  // ------------------------------------------------------------------ intro
  function intro() {
    $("n-trials").textContent = String(config.n_trials);
    const seconds = Math.round(config.seconds * 10) / 10;
    $("seconds").textContent = `${seconds} second${seconds === 1 ? "" : "s"}`;
    $("unit").textContent = config.mode === "acr" ? "short pieces of music" : "pairs of short pieces of music";
    $("task-acr").hidden = config.mode !== "acr";
    $("task-ab").hidden = config.mode !== "ab";
    $("rule").textContent = config.rule;
    $("rule").hidden = !config.rule;
    if (listener && !listener.done && Object.keys(listener.answers).length) {
      $("start").textContent = "Continue";
      $("resume-note").textContent =
        `You have answered ${Object.keys(listener.answers).length} of ${listener.trials.length}.`;
    }
    show("intro");
  }

  async function start() {
    $("start").disabled = true;
    try {
      const state = await api("POST", "/api/start", {});
      config = state.config;
      listener = state.listener;
    } catch (error) {
      fail(error);
      return;
    }
    if (listener.done) {
      showDone();
    } else {
      showTrial(listener.next);
    }
  }

  // ------------------------------------------------------------------ one trial
  function makePlayer(token, label) {
    const row = document.createElement("div");
    row.className = "player";
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    name.hidden = !label;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "play";
    button.textContent = "Play";
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    const heard = document.createElement("span");
    heard.className = "heard";
    row.append(name, button, bar, heard);
    const audio = new Audio();
    audio.preload = "auto";
    audio.src = `/audio/${token}.wav`;
    const player = { token, audio, button, plays: 0, heard: false };
    button.addEventListener("click", () => {
      if (!audio.paused) {
        audio.pause();
        return;
      }
      for (const other of players) {
        if (other !== player) other.audio.pause();
      }
      if (audio.ended) audio.currentTime = 0;
      audio.play().catch((error) => say(`The clip cannot play: ${error.message}`));
    });
    audio.addEventListener("play", () => {
      player.plays += 1;
      button.textContent = "Pause";
    });
    audio.addEventListener("pause", () => {
      button.textContent = audio.ended ? "Play again" : "Play";
    });
    audio.addEventListener("timeupdate", () => {
      if (audio.duration > 0) bar.value = audio.currentTime / audio.duration;
    });
    audio.addEventListener("ended", () => {
      button.textContent = "Play again";
      bar.value = 1;
      if (playedSeconds(audio) >= HEARD_SHARE * audio.duration) {
        player.heard = true;
        heard.textContent = "heard";
      }
      update();
    });
    audio.addEventListener("error", () => say("A clip could not be loaded: reload the page."));
    $("players").append(row);
    return player;
  }

  function options() {
    const box = $("options");
    box.textContent = "";
    const trial = listener.trials[current];
    const choices =
      config.mode === "acr"
        ? config.scale.map(([value, text]) => [String(value), `${value} \u2014 ${text}`])
        : trial.tokens.map((token, i) => [token, i === 0 ? "A" : "B"]);
    for (const [value, text] of choices) {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "answer";
      input.value = value;
      if (answered(current) && String(listener.answers[String(current)]) === value) input.checked = true;
      input.addEventListener("change", update);
      label.append(input, ` ${text}`);
      box.append(label);
    }
  }

  function selected() {
    const input = document.querySelector("input[name=answer]:checked");
    return input ? input.value : null;
  }

  function update() {
    const unlocked = answered(current) || players.every((p) => p.heard);
    $("answer").disabled = !unlocked;
    $("next").disabled = !(unlocked && selected() !== null);
    if (!unlocked) {
      say(players.length > 1 ? "Play both clips to their end to answer." : "Play the clip to its end to rate it.");
    } else if (selected() === null) {
      say(config.mode === "acr" ? "Now rate the clip." : "Now choose A or B.");
    } else {
      say("");
    }
  }

  function showTrial(k) {
    stopAll();
    current = k;
    const trial = listener.trials[k];
    $("noun").textContent = config.mode === "acr" ? "Clip" : "Pair";
    $("position").textContent = String(k + 1);
    $("total").textContent = String(listener.trials.length);
    $("overall").max = listener.trials.length;
    $("overall").value = Object.keys(listener.answers).length;
    $("players").textContent = "";
    players = trial.tokens.map((token, i) => makePlayer(token, trial.tokens.length > 1 ? "AB"[i] : ""));
    $("question").textContent = config.question;
    options();
    $("back").disabled = k === 0;
    shownAt = performance.now();
    show("trial");
    update();
  }

  async function next() {
    const value = selected();
    if (value === null) return;
    const trial = listener.trials[current];
    const unchanged = answered(current) && String(listener.answers[String(current)]) === value;
    if (!unchanged) {
      const body = {
        trial: current,
        tokens: trial.tokens,
        plays: Math.max(1, players.reduce((n, p) => n + p.plays, 0)),
        listened: players.reduce((s, p) => s + playedSeconds(p.audio), 0),
        page_seconds: (performance.now() - shownAt) / 1000,
      };
      if (config.mode === "acr") body.rating = Number(value);
      else body.choice = value;
      $("next").disabled = true;
      try {
        const saved = await api("POST", "/api/answer", body);
        listener.answers[String(current)] = config.mode === "acr" ? Number(value) : value;
        listener.done = saved.done;
        listener.next = saved.next;
      } catch (error) {
        say(`Not saved: ${error.message}`);
        update();
        return;
      }
    }
    if (current + 1 < listener.trials.length) {
      showTrial(current + 1);
    } else if (listener.done) {
      showDone();
    } else {
      showTrial(listener.next);
    }
  }

  function showDone() {
    stopAll();
    show("done");
  }

  async function load() {
    try {
      const state = await api("GET", "/api/state");
      config = state.config;
      listener = state.listener;
    } catch (error) {
      fail(error);
      return;
    }
    if (listener && listener.done) showDone();
    else intro();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("start").addEventListener("click", start);
    $("next").addEventListener("click", next);
    $("back").addEventListener("click", () => current > 0 && showTrial(current - 1));
    $("review").addEventListener("click", () => showTrial(listener.trials.length - 1));
    load();
  });
})();
