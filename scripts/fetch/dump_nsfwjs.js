#!/usr/bin/env node
// Helper for convert_nsfwjs.py. Two modes:
//
//   node dump_nsfwjs.js dump <pkgdir> <model> <outdir>
//     Evaluates <pkgdir>/dist/models/<model>/model.min.js and the
//     group1-shard*.min.js modules (UMD bundles: module.exports = {...} /
//     a base64 string), and writes
//       <outdir>/<model>.model.json   {modelTopology, weightsManifest, ...}
//       <outdir>/<model>.weights.bin  decoded shard bytes, concatenated in
//                                     weightsManifest[*].paths order
//     This is exactly what nsfwjs's JSONHandler.load() feeds to
//     tf.loadLayersModel (dist/cjs/core.js).
//
//   node dump_nsfwjs.js classify <pkgdir> <ModelName> <pixels.bin> <n> <size> <out.json>
//     Runs the official package (dist/cjs/index.js; needs @tensorflow/tfjs
//     resolvable, e.g. via NODE_PATH) on n uint8 RGB images of size x size
//     (HWC, row-major) and writes the 5 softmax outputs of NSFWJS.infer()
//     (which divides by 255 and, since the size already matches, does not
//     resize) to out.json.
'use strict';
const fs = require('fs');
const path = require('path');

function dump(pkgdir, model, outdir) {
  const mdir = path.join(pkgdir, 'dist', 'models', model);
  const mj = require(path.resolve(mdir, 'model.min.js'));
  const json = mj && mj.default ? mj.default : mj;
  if (!json.modelTopology || !json.weightsManifest) {
    throw new Error(`${mdir}/model.min.js does not export modelTopology/weightsManifest`);
  }
  const bufs = [];
  const shards = [];
  for (const group of json.weightsManifest) {
    for (const p of group.paths) {
      const m = require(path.resolve(mdir, p + '.min.js'));
      const b64 = typeof m === 'string' ? m : m.default;
      if (typeof b64 !== 'string') throw new Error(`${p}.min.js does not export a base64 string`);
      const buf = Buffer.from(b64, 'base64');
      shards.push({ path: p, bytes: buf.length });
      bufs.push(buf);
    }
  }
  fs.mkdirSync(outdir, { recursive: true });
  fs.writeFileSync(path.join(outdir, model + '.model.json'), JSON.stringify(json));
  const all = Buffer.concat(bufs);
  fs.writeFileSync(path.join(outdir, model + '.weights.bin'), all);
  console.log(JSON.stringify({ model, shards, total_bytes: all.length }));
}

async function classify(pkgdir, modelName, pixFile, n, size, outFile) {
  const tf = require('@tensorflow/tfjs');
  const nsfwjs = require(path.resolve(pkgdir, 'dist', 'cjs', 'index.js'));
  await tf.setBackend('cpu');
  await tf.ready();
  const origInfo = console.info;
  console.info = () => {};
  const t0 = Date.now();
  const model = await nsfwjs.load(modelName);
  console.info = origInfo;
  const tLoad = Date.now() - t0;
  const pix = fs.readFileSync(pixFile);
  const per = size * size * 3;
  if (pix.length !== n * per) throw new Error(`pixel file has ${pix.length} bytes, expected ${n * per}`);
  const outputs = [];
  const t1 = Date.now();
  for (let i = 0; i < n; i++) {
    const img = tf.tensor3d(Int32Array.from(pix.subarray(i * per, (i + 1) * per)), [size, size, 3], 'int32');
    const y = model.infer(img);
    outputs.push(Array.from(await y.data()));
    y.dispose();
    img.dispose();
  }
  const res = {
    model: modelName,
    tfjs_version: tf.version.tfjs,
    backend: tf.getBackend(),
    load_ms: tLoad,
    infer_ms: Date.now() - t1,
    outputs,
  };
  fs.writeFileSync(outFile, JSON.stringify(res));
  console.log(JSON.stringify({ model: modelName, tfjs: res.tfjs_version, backend: res.backend, load_ms: tLoad, infer_ms: res.infer_ms }));
}

async function main() {
  const [mode, ...a] = process.argv.slice(2);
  if (mode === 'dump' && a.length === 3) return dump(a[0], a[1], a[2]);
  if (mode === 'classify' && a.length === 6) return classify(a[0], a[1], a[2], +a[3], +a[4], a[5]);
  console.error('usage: dump <pkgdir> <model> <outdir> | classify <pkgdir> <ModelName> <pixels.bin> <n> <size> <out.json>');
  process.exit(2);
}
main().catch((e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
