// evault web UI: receipt verification in the browser with WebCrypto (DESIGN §4, §9).
//
// A receipt is an RSASSA-PSS signature (SHA-256, MGF1-SHA-256, 32-byte salt) over the exact
// bytes of a canonical-JSON statement.  This script checks it with the public key in the key
// box (served by the gateway, pinned in this browser, or pasted by the user), and checks a
// local file's SHA-256 and size against the statement that verified.  Nothing leaves the
// browser.  Results go to #verify-result and #file-result as data-result="valid|invalid" and
// "match|mismatch" (the browser tests read these), with one sentence for people.
"use strict";

(function () {
  const PIN_STORAGE_KEY = "evault.pinned-vault-public-key";
  const STATEMENT_TYPE = "evault.receipt-statement";

  function byId(id) {
    return document.getElementById(id);
  }

  function show(element, result, text) {
    element.dataset.result = result;
    element.textContent = text;
  }

  function base64ToBytes(text, what) {
    const clean = text.replace(/\s+/g, "");
    if (clean === "") throw new Error(what + " is empty");
    if (clean.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(clean)) {
      throw new Error(what + " is not valid base64");
    }
    const binary = atob(clean);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function pemToSpki(pem) {
    const match = /-----BEGIN PUBLIC KEY-----([\s\S]*?)-----END PUBLIC KEY-----/.exec(pem);
    if (!match) throw new Error("the key box holds no PEM public key (-----BEGIN PUBLIC KEY-----)");
    return base64ToBytes(match[1], "the public key");
  }

  function toHex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function normalizePem(pem) {
    return pem.replace(/\s+/g, "");
  }

  function requireWebCrypto() {
    if (!window.isSecureContext || !window.crypto || !window.crypto.subtle) {
      throw new Error("this browser offers no WebCrypto on this page (it needs HTTPS)");
    }
  }

  // --- pinning the vault key (trust on first use, per browser) -------------------------------

  function readPin() {
    try {
      const raw = window.localStorage.getItem(PIN_STORAGE_KEY);
      if (!raw) return null;
      const pin = JSON.parse(raw);
      return typeof pin.pem === "string" ? pin : null;
    } catch (e) {
      return null;
    }
  }

  function setUpPinButton() {
    const button = byId("pin-key");
    const out = byId("pin-result");
    if (!button || !out) return;
    button.addEventListener("click", () => {
      const source = byId(button.dataset.keySource);
      const pem = source.value !== undefined ? source.value : source.textContent;
      try {
        pemToSpki(pem);
        window.localStorage.setItem(
          PIN_STORAGE_KEY,
          JSON.stringify({ pem: pem.trim(), pinnedAt: new Date().toISOString() })
        );
        show(out, "pinned", "This browser now remembers this key and uses it on receipt pages.");
      } catch (e) {
        show(out, "error", "Not remembered: " + e.message + ".");
      }
    });
  }

  // --- receipt and file checks ---------------------------------------------------------------

  let verified = null; // the statement object of the last receipt that verified
  let runs = 0; // only the latest check may write its result (checks can overlap)

  function renderFields(fields) {
    const table = byId("verified-fields");
    if (!table) return;
    const body = table.tBodies[0];
    body.replaceChildren();
    if (fields === null) {
      table.hidden = true;
      return;
    }
    for (const [key, value] of Object.entries(fields)) {
      const row = body.insertRow();
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = key;
      row.appendChild(th);
      row.insertCell().textContent = String(value);
    }
    table.hidden = false;
  }

  async function verifyReceipt() {
    const out = byId("verify-result");
    const run = ++runs;
    const report = (result, text) => {
      if (run === runs) show(out, result, text);
      return run === runs;
    };
    verified = null;
    renderFields(null);
    show(out, "pending", "Checking…");
    try {
      requireWebCrypto();
      const statement = base64ToBytes(byId("paste-statement").value, "the statement");
      const signature = base64ToBytes(byId("paste-signature").value, "the signature");
      const key = await crypto.subtle.importKey(
        "spki",
        pemToSpki(byId("paste-public-key").value),
        { name: "RSA-PSS", hash: "SHA-256" },
        false,
        ["verify"]
      );
      const ok = await crypto.subtle.verify(
        { name: "RSA-PSS", saltLength: 32 },
        key,
        signature,
        statement
      );
      if (!ok) {
        report("invalid", "invalid: the signature does not match this statement and this key.");
        return;
      }
      let fields;
      try {
        fields = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(statement));
      } catch (e) {
        fields = null;
      }
      if (fields === null || typeof fields !== "object" || fields.type !== STATEMENT_TYPE) {
        report("invalid", "invalid: the key signed these bytes, but they are not an evault receipt statement.");
        return;
      }
      if (run !== runs) return;
      verified = fields;
      renderFields(fields);
      report(
        "valid",
        `valid: the vault's key signed this statement — "${fields.name}" version ${fields.version}` +
          ` of ${fields.owner}, ${fields.size} bytes, SHA-256 ${fields.sha256}.`
      );
    } catch (e) {
      report("invalid", "invalid: " + e.message + ".");
    }
  }

  async function checkFile() {
    const out = byId("file-result");
    const input = byId("verify-file");
    if (!input.files || input.files.length === 0) {
      show(out, "error", "Choose a file first.");
      return;
    }
    if (verified === null) await verifyReceipt();
    if (verified === null) {
      show(out, "error", "No valid receipt to compare with: the receipt above does not verify.");
      return;
    }
    const file = input.files[0];
    show(out, "pending", "Hashing " + file.name + "…");
    try {
      requireWebCrypto();
      const digest = toHex(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
      if (digest === verified.sha256 && file.size === verified.size) {
        show(out, "match", `match: ${file.name} is the document this receipt vouches for (SHA-256 ${digest}).`);
      } else {
        show(
          out,
          "mismatch",
          `mismatch: ${file.name} has ${file.size} bytes and SHA-256 ${digest}; ` +
            `the receipt says ${verified.size} bytes and SHA-256 ${verified.sha256}.`
        );
      }
    } catch (e) {
      show(out, "error", "The file could not be read: " + e.message + ".");
    }
  }

  function setUpVerifier() {
    const form = byId("verify-form");
    if (!form) return;
    const keyBox = byId("paste-public-key");
    const served = keyBox.defaultValue;
    const pin = readPin();
    const source = byId("key-source");
    if (pin !== null) {
      const when = pin.pinnedAt ? " on " + pin.pinnedAt.slice(0, 10) : "";
      if (normalizePem(pin.pem) === normalizePem(served)) {
        source.textContent = "This is the key this browser remembered" + when + "; the gateway serves the same key.";
      } else {
        keyBox.value = pin.pem;
        source.textContent =
          "Warning: the key this gateway serves differs from the key this browser remembered" +
          when + ". The remembered key is in the box.";
        source.classList.add("error");
      }
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      verifyReceipt();
    });
    for (const id of ["paste-statement", "paste-signature", "paste-public-key"]) {
      byId(id).addEventListener("input", () => {
        runs++; // a check still running is about the old text
        verified = null;
        renderFields(null);
        show(byId("verify-result"), "", "Changed: press “Verify the receipt” to check again.");
      });
    }
    byId("file-form").addEventListener("submit", (event) => {
      event.preventDefault();
      checkFile();
    });
    if (byId("paste-statement").value.trim() !== "") verifyReceipt();
  }

  document.addEventListener("DOMContentLoaded", () => {
    setUpPinButton();
    setUpVerifier();
  });
})();
