/**
 * The README and docs/ stay true to the code: every link between them leads to a file and a heading that
 * exist, every test they cite exists (docs/security.md names each rule's tests by file and title), and every
 * TypeScript example compiles against the sources, with the package's own names as users import them.
 *
 * An example may be a fragment: a name it uses without declaring (`options`, `showLoginBanner()`) is the
 * reader's own, so "cannot find name" is the one error allowed. Everything it imports, calls or reads from
 * Gatehouse must exist with the types the example assumes.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

const root = join(__dirname, '..', '..');
const docs = [
  'README.md',
  ...readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];
const read = (file: string) => readFileSync(join(root, file), 'utf8');

/** The text outside fenced code blocks (links and citations inside examples are not links). */
const prose = (markdown: string) => markdown.replace(/^```[\s\S]*?^```$/gm, '');

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens. */
const slug = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');

function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const [, heading] of prose(markdown).matchAll(/^#{1,6} (.+)$/gm)) {
    const base = slug(heading!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n ? `${base}-${n}` : base);
  }
  return out;
}

describe('the README and docs/', () => {
  it.each(docs)('%s: every relative link leads to a file, and every #anchor to a heading there', (file) => {
    const broken: string[] = [];
    for (const [, target] of prose(read(file)).matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/i.test(target!)) continue; // https:, mailto:
      const [path, anchor] = target!.split('#') as [string, string | undefined];
      const linked = path ? relative(root, resolve(dirname(join(root, file)), path)) : file;
      if (!existsSync(join(root, linked))) broken.push(`${target} (no file ${linked})`);
      else if (anchor !== undefined && linked.endsWith('.md') && !anchors(read(linked)).has(anchor))
        broken.push(`${target} (no heading #${anchor} in ${linked})`);
    }
    expect(broken).toEqual([]);
  });

  it.each(docs)('%s: every test file it names exists', (file) => {
    const named = [...read(file).matchAll(/`(test\/[^`\s]+\.test\.ts)`/g)].map((m) => m[1]!);
    expect(named.filter((f) => !existsSync(join(root, f)))).toEqual([]);
  });

  it('docs/security.md: every test title it cites is in the file it names', () => {
    const text = read('docs/security.md').replace(/\s+/g, ' ');
    const missing: string[] = [];
    let file: string | undefined;
    let cited = 0;
    for (const m of text.matchAll(/`(test\/[^`]+?\.test\.ts)`|“([^”]+)”/g)) {
      if (m[1]) file = m[1];
      else if (file) {
        cited++;
        const source = existsSync(join(root, file)) ? read(file).replace(/\s+/g, ' ') : '';
        if (!source.includes(m[2]!)) missing.push(`${file} › “${m[2]}”`);
      }
    }
    expect(cited).toBeGreaterThan(100);
    expect(missing).toEqual([]);
  });

  it('every TypeScript example compiles against the sources', () => {
    const examples = new Map<string, string>();
    for (const file of docs) {
      [...read(file).matchAll(/^```ts\n([\s\S]*?)^```$/gm)].forEach((m, i) => {
        // `export {}` makes each example a module of its own (top-level await, no shared names).
        examples.set(join(root, '.docs-examples', `${file.replace(/\W/g, '_')}_${i + 1}.ts`), `${m[1]}\nexport {};\n`);
      });
    }
    expect(examples.size).toBeGreaterThan(5);

    const options: ts.CompilerOptions = {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      lib: ['lib.es2023.d.ts', 'lib.dom.d.ts', 'lib.dom.iterable.d.ts'],
      types: ['node', 'jest'],
      typeRoots: [join(root, 'node_modules', '@types')],
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      esModuleInterop: true,
      resolveJsonModule: true,
      paths: {
        'gatehouse-bff': [join(root, 'src', 'index.ts')],
        'gatehouse-bff/testing': [join(root, 'src', 'testing', 'index.ts')],
        'gatehouse-bff/client': [join(root, 'client', 'index.ts')],
      },
    };
    const host = ts.createCompilerHost(options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (name, language, ...rest) => {
      const text = examples.get(name);
      return text !== undefined ? ts.createSourceFile(name, text, language) : getSourceFile(name, language, ...rest);
    };
    const fileExists = host.fileExists.bind(host);
    host.fileExists = (name) => examples.has(name) || fileExists(name);
    const readFile = host.readFile.bind(host);
    host.readFile = (name) => examples.get(name) ?? readFile(name);

    const program = ts.createProgram([...examples.keys()], options, host);
    const READERS_OWN_NAME = new Set([2304, 2552]); // cannot find name 'x' (did you mean ...)
    const problems = ts
      .getPreEmitDiagnostics(program)
      .filter((d) => d.file && examples.has(d.file.fileName) && !READERS_OWN_NAME.has(d.code))
      .map((d) => {
        const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
        return `${relative(root, d.file!.fileName)}:${line + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
      });
    expect(problems).toEqual([]);
  }, 60_000);
});
