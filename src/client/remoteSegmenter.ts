// A TileSegmenter over one SegmentTiles stream of a histoseg server: tiles go as PNG, masks come back as PNG.
import sharp from 'sharp';
import { decodePlainPng } from '../imaging/png.js';
import type { TileAnswer, TileOutcome, TileRequest, TileSegmenter } from '../pipeline/segmentSlide.js';
import { TileStatus, type Tile } from '../proto/gen/histoseg/v1/segmentation.js';
import { mapAhead } from '../util/mapAhead.js';
import { segmentTiles, type HistosegClients } from './segmentationClient.js';

/** Tiles encoded ahead of the stream, so encoding overlaps with the server's work. */
const ENCODE_AHEAD = 4;

export interface RemoteModel {
  name: string;
  version: string;
  /** The model's microns per pixel: tiles are sent at this scale. */
  mpp: number;
}

const OUTCOME: Partial<Record<TileStatus, TileOutcome>> = {
  [TileStatus.TILE_STATUS_SEGMENTED]: 'segmented',
  [TileStatus.TILE_STATUS_BACKGROUND]: 'background',
  [TileStatus.TILE_STATUS_INVALID]: 'invalid',
};

/**
 * `level0` gives each tile's level-0 place, which travels in the tile and comes back in its answer (the client
 * checks that every answer is for the tile it expects).
 */
export function remoteSegmenter(clients: HistosegClients, model: RemoteModel, level0: (t: TileRequest) => { x: number; y: number }): TileSegmenter {
  return {
    async *segmentTiles(tiles, { wantLabels, signal }) {
      const sent: TileRequest[] = [];
      const encode = async (t: TileRequest): Promise<Tile> => {
        sent.push(t);
        const image = await sharp(t.rgb.data, { raw: { width: t.rgb.width, height: t.rgb.height, channels: 3 } }).png({ compressionLevel: 1 }).toBuffer();
        return { tileId: String(t.index), image, mpp: model.mpp, ...level0(t) };
      };
      const stream = segmentTiles(clients, mapAhead(tiles, encode, ENCODE_AHEAD), { modelName: model.name, modelVersion: model.version, omitMask: !wantLabels }, { signal });
      let i = 0;
      for await (const a of stream) {
        const t = sent[i];
        if (!t || a.tileId !== String(t.index)) throw new Error(`answer ${i} is for tile ${a.tileId}, expected ${t?.index ?? 'none'}`);
        i++;
        const status = OUTCOME[a.status];
        if (!status) throw new Error(`tile ${t.index}: the server answered status ${a.status}`);
        let labels: Uint8Array | null = null;
        if (wantLabels && status !== 'invalid') {
          const png = decodePlainPng(a.mask);
          if (!png || png.channels !== 1 || png.width !== t.region.width || png.height !== t.region.height) {
            throw new Error(`the mask of tile ${t.index} is not an 8-bit ${t.region.width}x${t.region.height} greyscale PNG`);
          }
          labels = png.data;
        }
        const answer: TileAnswer = { status, labels, fractions: a.classFractions, ...(a.error ? { error: a.error } : {}) };
        yield answer;
      }
    },
  };
}
