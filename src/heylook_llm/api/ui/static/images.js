// Images attached to a chat message, as data URLs. Large images are scaled down here (the server scales them
// again to what the model takes) so that conversations stay small enough for the browser's storage.

const MAX_SIDE = 1536;
const KEPT_AS_IS = ["image/png", "image/jpeg"];

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error || new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

export async function imageToDataUrl(file) {
  if (!file.type.startsWith("image/")) throw new Error(`${file.name || "the file"} is not an image`);
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new Error(`${file.name || "the image"} cannot be decoded by this browser`);
  }
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && KEPT_AS_IS.includes(file.type)) {
    bitmap.close();
    return readAsDataUrl(file);
  }
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  // PNG keeps transparency; everything else becomes JPEG.
  return file.type === "image/png" ? canvas.toDataURL("image/png") : canvas.toDataURL("image/jpeg", 0.9);
}

// The image files of a drop or paste (DataTransfer).
export function imageFiles(transfer) {
  if (!transfer) return [];
  return Array.from(transfer.files || []).filter((file) => file.type.startsWith("image/"));
}
