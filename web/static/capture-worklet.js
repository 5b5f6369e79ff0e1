// AudioWorklet: microphone blocks (128 samples at the context's rate, any channel count) -> mono 16 kHz PCM16
// frames of FRAME_MS, posted (transferred) to the page, which sends each as one binary WebSocket message.
import { FRAME, Resampler, downmix, toPCM16 } from "./pcm.js";

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(sampleRate); // sampleRate: the AudioContext's, a global of the worklet scope
    this.frame = new Float32Array(FRAME);
    this.fill = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) {
      for (const s of this.resampler.push(downmix(channels))) {
        this.frame[this.fill++] = s;
        if (this.fill === FRAME) {
          const pcm = toPCM16(this.frame);
          this.port.postMessage(pcm, [pcm.buffer]);
          this.fill = 0;
        }
      }
    }
    return true; // keep running while the page holds the node
  }
}

registerProcessor("pcm16-capture", Capture);
