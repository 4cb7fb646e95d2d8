"""The web page of `resnetlab serve`: pick or drop an image, see the top-5, the Grad-CAM and the stage maps."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>resnetlab</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
 #drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; }
 #drop.over { background: #eef; }
 .row { display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap; margin-top: 1em; }
 figure { margin: 0; } figcaption { font-size: 0.9em; color: #555; }
 #top5 li { font-family: monospace; } .bar { display: inline-block; height: 0.8em; background: #36c; }
 #error { color: #b00; } #model { font-size: 0.9em; color: #444; margin-bottom: 1em; }
 .stage img { display: block; max-width: 100%; image-rendering: pixelated; }
</style>
</head>
<body>
<h1>resnetlab</h1>
<div id="model">loading the model...</div>
<div id="drop">Drop an image here, or <input type="file" id="file" accept="image/*"></div>
<p id="error"></p>
<div class="row">
 <figure><img id="input" alt="the input as the model sees it" hidden><figcaption>input</figcaption></figure>
 <figure><img id="cam" alt="Grad-CAM of the top class" hidden><figcaption id="camcaption">Grad-CAM</figcaption></figure>
 <div><h3>Top-5</h3><ol id="top5"></ol></div>
</div>
<h3>Feature maps (first channels of the stem and each stage)</h3>
<div id="features"></div>
<script>
const $ = (id) => document.getElementById(id);
fetch("/model").then((r) => r.json()).then((m) => {
  const pre = m.preprocessing || {};
  $("model").textContent = `model ${m.arch} (${m.weights}, ${m.precision}); ${m.classes.length} classes: ` +
    m.classes.slice(0, 20).join(", ") + (m.classes.length > 20 ? ", ..." : "") +
    `; input ${(pre.input_size || [224, 224]).join("x")}, mean ${JSON.stringify(pre.mean)}, std ` +
    `${JSON.stringify(pre.std)}; accuracy ${m.accuracy == null ? "not recorded" : m.accuracy + "%"}`;
});
async function explain(file) {
  $("error").textContent = "working...";
  const form = new FormData();
  form.append("file", file);
  const response = await fetch("/explain", {method: "POST", body: form});
  const data = await response.json();
  if (!response.ok) { $("error").textContent = data.error; return; }
  $("error").textContent = "";
  $("input").src = data.image; $("input").hidden = false;
  $("cam").src = data.cam; $("cam").hidden = false;
  $("camcaption").textContent = `${data.method} of ${data.predictions[0].label}`;
  $("top5").innerHTML = "";
  for (const p of data.predictions) {
    const li = document.createElement("li");
    li.innerHTML = `<span class="bar" style="width:${Math.round(120 * p.probability)}px"></span> `;
    li.append(`${p.label} ${(100 * p.probability).toFixed(1)}%`);
    $("top5").append(li);
  }
  $("features").innerHTML = "";
  for (const f of data.features) {
    const div = document.createElement("div");
    div.className = "stage";
    div.innerHTML = `<p><b>${f.name}</b> ${f.shape.join(" x ")} (channels x height x width)</p>`;
    const img = document.createElement("img");
    img.src = f.image; img.alt = f.name;
    div.append(img);
    $("features").append(div);
  }
}
$("file").addEventListener("change", (e) => e.target.files[0] && explain(e.target.files[0]));
$("drop").addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => {
  e.preventDefault(); $("drop").classList.remove("over");
  if (e.dataTransfer.files[0]) explain(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""
