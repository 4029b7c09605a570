// One timed `evaluate --model` run of the tree whose src/ is given: prints one JSON line. Used by bench/evaluate.ts.
const [root, data, models, model] = process.argv.slice(2);
if (!root || !data || !models || !model) throw new Error('usage: evaluateOnce.ts ROOT DATA MODELS NAME@VERSION');
const { evaluateModel } = (await import(`${root}/src/evaluation/evaluateModel.ts`)) as {
  evaluateModel(o: { models: string; model: string; data: string; split: 'test' }): Promise<{ slides: string[]; metrics: { macroF1: number | null; confusion: number[][] } }>;
};
const t0 = performance.now();
const r = await evaluateModel({ models, model, data, split: 'test' });
const seconds = (performance.now() - t0) / 1000;
const pixels = r.metrics.confusion.flat().reduce((a, b) => a + b, 0);
process.stdout.write(JSON.stringify({ seconds, slides: r.slides.length, pixels, macroF1: r.metrics.macroF1 }) + '\n');
