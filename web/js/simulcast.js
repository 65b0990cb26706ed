// simulcast.js — the camera's simulcast on the SFU connection: the layers it is published in
// (rid, downscale, bitrate cap), keeping each layer's resolution when the CPU runs short (the
// frame rate gives instead: the SFU chooses layers by width), and turning layers on and off as
// the SFU's `sfu-layers` asks. Mesh links (peer.js) publish one encoding and never come here.

/** Lowest first; the SFU sends each subscriber the one its tile and bandwidth call for. */
export const CAMERA_LAYERS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 80000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 250000 }),
  Object.freeze({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 700000 }),
]);

/** A send-only transceiver publishing `track` in every layer of CAMERA_LAYERS. */
export function addSimulcastCamera(pc, track, stream) {
  return pc.addTransceiver(track, {
    direction: 'sendonly',
    streams: [stream],
    sendEncodings: CAMERA_LAYERS.map((layer) => ({ ...layer })),
  });
}

/** CPU adaptation lowers the frame rate, never a layer's resolution. */
export async function keepResolution(sender) {
  const params = sender.getParameters();
  params.degradationPreference = 'maintain-resolution';
  await sender.setParameters(params);
}

/**
 * Sets `active` on each encoding whose rid `layers` ([{rid, active}]) lists; the others stay as
 * they are. Resolves with the rids now active (unchanged parameters are not set again).
 */
export async function applyLayers(sender, layers) {
  const wanted = new Map(layers.filter((l) => l && typeof l.rid === 'string').map((l) => [l.rid, !!l.active]));
  const params = sender.getParameters();
  let changed = false;
  for (const encoding of params.encodings || []) {
    if (!wanted.has(encoding.rid) || encoding.active === wanted.get(encoding.rid)) continue;
    encoding.active = wanted.get(encoding.rid);
    changed = true;
  }
  if (changed) await sender.setParameters(params);
  return (params.encodings || []).filter((e) => e.active).map((e) => e.rid);
}
