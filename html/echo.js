// Connects back to the server that served this page (same host and port).
"use strict";

const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const url = scheme + location.host + "/";
const statusEl = document.getElementById("status");
const logEl = document.getElementById("log");
const form = document.getElementById("send-form");
const input = document.getElementById("message");
const sendButton = document.getElementById("send");
const closeButton = document.getElementById("close");

function log(kind, text) {
  const item = document.createElement("li");
  item.className = kind;
  item.textContent = kind + ": " + text;
  logEl.appendChild(item);
}

function setStatus(text, open) {
  statusEl.textContent = text;
  sendButton.disabled = !open;
  closeButton.disabled = !open;
}

const socket = new WebSocket(url);
socket.addEventListener("open", () => setStatus("open (" + url + ")", true));
socket.addEventListener("message", (event) => log("echo", event.data));
socket.addEventListener("close", (event) =>
  setStatus("closed (code " + event.code + (event.reason ? ", " + event.reason : "") + ")", false));
socket.addEventListener("error", () => log("error", "the connection failed"));

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (socket.readyState === WebSocket.OPEN && input.value) {
    socket.send(input.value);
    log("sent", input.value);
  }
});
closeButton.addEventListener("click", () => socket.close(1000, "bye"));
