// Audio helpers shared by the capture worklet and the file upload: what /v1/listen is sent is mono 16 kHz PCM16.
export const RATE = 16000; // Hz: the rate we ask /v1/listen to take (Whisper's own, so the server resamples nothing)
export const FRAME_MS = 40; // ms of audio per binary WebSocket frame: 20-40 ms keeps latency low and frames few
export const FRAME = (RATE * FRAME_MS) / 1000; // samples per frame (640)

/** Average the channels of one block (Float32Array per channel) into one Float32Array. */
export function downmix(channels) {
  if (channels.length === 1) return channels[0];
  const out = new Float32Array(channels[0].length);
  for (const ch of channels) for (let i = 0; i < out.length; i++) out[i] += ch[i];
  for (let i = 0; i < out.length; i++) out[i] /= channels.length;
  return out;
}

/** Float samples in [-1, 1] -> little-endian signed 16-bit (clipped), as /v1/listen's pcm_s16le wants. */
export function toPCM16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out;
}

/**
 * Streaming band-limited resampler (windowed sinc): push blocks of any length at `inRate`, get the samples at
 * `outRate` that are ready. Downsampling low-passes first (cutoff a little under the output's Nyquist), so 48 kHz
 * microphones do not alias hiss into the speech band the way plain decimation would.
 */
export class Resampler {
  constructor(inRate, outRate = RATE, zeros = 8) {
    this.step = inRate / outRate; // input samples per output sample
    this.identity = inRate === outRate;
    this.cutoff = Math.min(1, outRate / inRate) * 0.92; // of the input Nyquist; 8 % transition band
    this.half = Math.ceil(zeros / this.cutoff); // kernel taps on each side of the output instant
    this.buf = new Float32Array(this.half); // history (starts as silence) + pending input
    this.pos = this.half; // where the next output sample lies in buf, in input samples
  }

  kernel(d) {
    const x = d * this.cutoff;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const window = 0.5 * (1 + Math.cos((Math.PI * d) / (this.half + 1))); // Hann over the kernel's span
    return this.cutoff * sinc * window;
  }

  push(block) {
    if (this.identity) return Float32Array.from(block);
    const buf = new Float32Array(this.buf.length + block.length);
    buf.set(this.buf);
    buf.set(block, this.buf.length);
    const out = [];
    while (this.pos + this.half < buf.length) {
      const c = Math.floor(this.pos);
      let acc = 0;
      for (let k = c - this.half + 1; k <= c + this.half; k++) acc += buf[k] * this.kernel(this.pos - k);
      out.push(acc);
      this.pos += this.step;
    }
    const drop = Math.max(0, Math.floor(this.pos) - this.half); // keep what the next outputs still reach back to
    this.buf = buf.slice(drop);
    this.pos -= drop;
    return Float32Array.from(out);
  }
}
