// Line plots on <canvas>: one line per model over the last minutes, x in seconds before now.

// Hues far apart, readable on light and dark backgrounds; a tenth model shares the first one's colour.
const PALETTE = ["#2f6fde", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8a100", "#0c8599", "#c2255c", "#8b5a2b", "#74b816"];

export function colorFor(index) {
  return index < 0 ? "#868e96" : PALETTE[index % PALETTE.length];
}

// A round number at or above `value` (1, 2, 5 x 10^n), for the top of the y axis.
function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// lines: [{color, points: [[secondsAgo (<= 0), value], ...]}] with points oldest first; values may be null.
// options: {seconds, format(value) -> label, dots (draw points, for sparse figures), floor (least y maximum),
//           integer (the values are counts)}
export function drawPlot(canvas, lines, options) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const style = getComputedStyle(canvas);
  const ink = style.color;
  const grid = style.getPropertyValue("--grid").trim() || "rgba(128,128,128,0.25)";
  ctx.font = `11px ${style.fontFamily}`;

  let top = options.floor ?? 1;
  for (const line of lines) for (const [, value] of line.points) if (value !== null && value > top) top = value;
  // Counts get a top divisible by the four grid steps, so that every label is a whole number.
  top = options.integer ? Math.ceil(top / 4) * 4 : niceCeiling(top);

  const left = 52;
  const right = 8;
  const upper = 8;
  const lower = 20;
  const plotWidth = width - left - right;
  const plotHeight = height - upper - lower;
  const x = (ago) => left + plotWidth * (1 + ago / options.seconds);
  const y = (value) => upper + plotHeight * (1 - value / top);

  ctx.strokeStyle = grid;
  ctx.fillStyle = ink;
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i += 1) {
    const value = (top * i) / 4;
    const py = Math.round(y(value)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, py);
    ctx.lineTo(width - right, py);
    ctx.stroke();
    ctx.fillText(options.format(value), left - 6, py);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const minutes = Math.round(options.seconds / 60);
  for (let m = minutes; m >= 0; m -= 1) {
    ctx.fillText(m === 0 ? "now" : `-${m}m`, Math.min(x(-m * 60), width - right - 12), height - lower + 5);
  }

  ctx.save();
  ctx.beginPath();
  ctx.rect(left, upper - 2, plotWidth, plotHeight + 4);
  ctx.clip();
  for (const line of lines) {
    ctx.strokeStyle = line.color;
    ctx.fillStyle = line.color;
    ctx.lineWidth = 1.75;
    ctx.beginPath();
    let previous = null;
    for (const [ago, value] of line.points) {
      if (value === null) {
        previous = null;
        continue;
      }
      // A gap of more than two seconds (the model was not loaded, the page was away) is not bridged.
      if (previous === null || ago - previous > 2.5) ctx.moveTo(x(ago), y(value));
      else ctx.lineTo(x(ago), y(value));
      previous = ago;
    }
    ctx.stroke();
    if (options.dots) {
      for (const [ago, value] of line.points) {
        if (value === null) continue;
        ctx.beginPath();
        ctx.arc(x(ago), y(value), 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
  }
  ctx.restore();
}
