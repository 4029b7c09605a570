// JPEG 2000 compressed TIFF/SVS (Aperio compression 33003 = YCbCr samples, 33005 = RGB samples, and 34712): geotiff
// parses the IFDs and finds the tiles a window needs; each tile's codestream goes through the same OpenJPEG decoder
// as DICOM JPEG 2000 frames (imaging/jpeg2000.ts). Tile by tile, never a whole level at once.
import { addDecoder, fromFile, type GeoTIFF, type GeoTIFFImage } from 'geotiff';
import type { RgbImage } from '../../imaging/decode.js';
import { decodeJpeg2000 } from '../../imaging/jpeg2000.js';

export const JPEG2000_TIFF_COMPRESSIONS: readonly number[] = [33003, 33005, 34712];

function decoderFor(ycbcr: boolean) {
  return class Jpeg2000TileDecoder {
    constructor(readonly parameters: { tileWidth: number; tileHeight: number }) {}
    async decode(buffer: ArrayBuffer): Promise<ArrayBuffer> {
      const img = await decodeJpeg2000(new Uint8Array(buffer), { ycbcr });
      const { tileWidth, tileHeight } = this.parameters;
      if (img.width === tileWidth && img.height === tileHeight) return img.data.buffer as ArrayBuffer;
      // An edge tile coded at its cropped size: pad it to the tile size geotiff expects.
      const out = new Uint8Array(tileWidth * tileHeight * 3).fill(255);
      for (let y = 0; y < Math.min(img.height, tileHeight); y++) {
        out.set(img.data.subarray(y * img.width * 3, y * img.width * 3 + Math.min(img.width, tileWidth) * 3), y * tileWidth * 3);
      }
      return out.buffer;
    }
  };
}

let registered = false;
function register(): void {
  if (registered) return;
  registered = true;
  const ycc = decoderFor(true);
  const rgb = decoderFor(false);
  // geotiff's registry types want its BaseDecoder; ours implements the one method it calls.
  addDecoder(33003, async () => ycc as never, undefined, false);
  addDecoder([33005, 34712], async () => rgb as never, undefined, false);
}

export interface Jpeg2000Tiff {
  tiff: GeoTIFF;
  /** Pyramid pages (level 0 first). */
  images: GeoTIFFImage[];
}

export async function openJpeg2000Tiff(path: string, pages: readonly number[]): Promise<Jpeg2000Tiff> {
  register();
  const tiff = await fromFile(path);
  const images = await Promise.all(pages.map((p) => tiff.getImage(p)));
  return { tiff, images };
}

/** RGB of a region of one pyramid page; only the tiles under the window are decoded. */
export async function readJpeg2000TiffRegion(t: Jpeg2000Tiff, level: number, r: { left: number; top: number; width: number; height: number }): Promise<RgbImage> {
  const image = t.images[level];
  if (!image) throw new RangeError(`level ${level} of ${t.images.length}`);
  const spp = image.getSamplesPerPixel();
  const raster = (await image.readRasters({
    window: [r.left, r.top, r.left + r.width, r.top + r.height],
    interleave: true,
    fillValue: 255,
  })) as unknown as Uint8Array;
  if (spp === 3) return { data: new Uint8Array(raster.buffer, raster.byteOffset, r.width * r.height * 3), width: r.width, height: r.height };
  const out = new Uint8Array(r.width * r.height * 3);
  for (let i = 0; i < r.width * r.height; i++) for (let c = 0; c < 3; c++) out[3 * i + c] = raster[i * spp + (spp >= 3 ? c : 0)]!;
  return { data: out, width: r.width, height: r.height };
}
