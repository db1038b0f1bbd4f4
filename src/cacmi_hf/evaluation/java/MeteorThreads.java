import edu.cmu.meteor.aligner.Aligner;
import edu.cmu.meteor.aligner.ParaphraseTransducer;
import edu.cmu.meteor.scorer.MeteorConfiguration;
import edu.cmu.meteor.scorer.MeteorScorer;
import edu.cmu.meteor.util.Normalizer;

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.File;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Function;

/**
 * METEOR 1.5's "SCORE" stdio protocol answered by several aligner threads in one JVM.
 *
 * Usage: java -cp meteor-1.5.jar:DIR MeteorThreads THREADS [--table-on-stdin] [METEOR options, e.g. -l en -norm -a FILE]
 *
 * With --table-on-stdin the process loads everything but the paraphrase table (give -a an empty
 * table) and then reads "TABLE path" lines before its first SCORE line: the caller can start the JVM,
 * (about a quarter of a second to load WordNet and the stemmer), before it knows the sentences
 * its paraphrase subset is cut for.
 * Before the table it also answers "NORMALIZE ||| text" with the text as the scorers will see it
 * (normalised, lower-cased), so that the table can be cut to the phrases the sentences hold.
 *
 * Each input line "SCORE ||| ref ||| ... ||| hyp" is answered, in input order, by the line the
 * jar's own "-stdio" mode prints for it: the sufficient statistics of MeteorScorer.getMeteorStats.
 * The jar aligns one line at a time; here the lines are spread over THREADS scorers made with
 * MeteorScorer's sharing constructor (one stemmer each, one read-only synonym and paraphrase
 * table for all), so the tables are loaded and the aligner is compiled once for every thread.
 * The scorer normalises each sentence again in every pair it appears in (a third of the jar's
 * time on a dense-captioning run); here each distinct sentence is normalised once, by the same
 * Normalizer call with the scorer's own settings, and the scorers are given the result.
 */
public final class MeteorThreads {
    private static final Future<String> END = new java.util.concurrent.CompletableFuture<>();
    private static final String NORMALIZE = "NORMALIZE ||| ";

    public static void main(String[] args) throws Exception {
        int threads = Integer.parseInt(args[0]);
        boolean tableOnStdin = args.length > 1 && args[1].equals("--table-on-stdin");
        String[] options = java.util.Arrays.copyOfRange(args, tableOnStdin ? 2 : 1, args.length);
        Properties properties = Meteor.createPropertiesFromArgs(options, 0); // the jar's own option parsing
        MeteorScorer base = new MeteorScorer(new MeteorConfiguration(properties));
        // Score one line before any thread starts: the normaliser fills a static table on first use.
        answer(base, null, "SCORE ||| a ||| a");
        Function<String, String> prepare = sentencePreparation(base);
        ThreadLocal<MeteorScorer> scorers = ThreadLocal.withInitial(() -> new MeteorScorer(base));
        ExecutorService pool = Executors.newFixedThreadPool(threads, task -> {
            Thread thread = new Thread(task);
            thread.setDaemon(true);
            return thread;
        });
        // Bounded, so a fast writer cannot queue the whole run in memory ahead of the aligners.
        BlockingQueue<Future<String>> pending = new ArrayBlockingQueue<>(64 * threads);
        Thread writer = new Thread(() -> write(pending));
        writer.start();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        // With --table-on-stdin, before its first SCORE line the caller may ask how sentences are
        // normalised (answered in order, by the pool) and send tables, the last one counting: the
        // scorers are copied from base at their first SCORE line, after it, so every thread sees it.
        boolean scoring = !tableOnStdin, tableSet = false;
        String line;
        while ((line = in.readLine()) != null) {
            if (!scoring && line.startsWith("TABLE ")) {
                setParaphraseTable(base, line.substring(6));
                tableSet = true;
                continue;
            }
            if (!scoring && line.startsWith(NORMALIZE)) {
                final String text = line.substring(NORMALIZE.length()).trim();
                pending.put(pool.submit(() -> prepare == null ? "Error: this jar's normaliser is not reachable" : prepare.apply(text)));
                continue;
            }
            if (!scoring && !tableSet) {
                System.err.println("Error: with --table-on-stdin, send a TABLE line before scoring; got: " + line);
                System.exit(2);
            }
            scoring = true;
            final String request = line;
            pending.put(pool.submit(() -> answer(scorers.get(), prepare, request)));
        }
        pending.put(END);
        writer.join();
        pool.shutdown();
    }

    /**
     * A cached version of the scorer's own sentence preparation (normalise, lower-case), which is
     * then switched off in ``scorer``; null (nothing changed) where this jar's fields differ.
     */
    static Function<String, String> sentencePreparation(MeteorScorer scorer) {
        try {
            Field normalize = field("normalize"), lowerCase = field("lowerCase");
            int language = field("langID").getInt(scorer);
            boolean normalizing = normalize.getBoolean(scorer), lowering = lowerCase.getBoolean(scorer);
            boolean keepPunctuation = field("keepPunctuation").getBoolean(scorer);
            normalize.setBoolean(scorer, false); // copies made from it now take prepared text
            lowerCase.setBoolean(scorer, false);
            Map<String, String> prepared = new ConcurrentHashMap<>();
            return text -> prepared.computeIfAbsent(text, t -> {
                String out = normalizing ? Normalizer.normalizeLine(t, language, keepPunctuation) : t;
                return lowering ? out.toLowerCase() : out;
            });
        } catch (ReflectiveOperationException | RuntimeException err) {
            return null;
        }
    }

    private static Field field(String name) throws NoSuchFieldException {
        return field(MeteorScorer.class, name);
    }

    private static Field field(Class<?> owner, String name) throws NoSuchFieldException {
        Field field = owner.getDeclaredField(name);
        field.setAccessible(true);
        return field;
    }

    /**
     * Give ``scorer``'s aligner the paraphrase table at ``path`` (what "-a path" would have loaded);
     * scorers copied from it afterwards share it.
     */
    static void setParaphraseTable(MeteorScorer scorer, String path) throws Exception {
        Object aligner = field("aligner").get(scorer);
        ParaphraseTransducer table = new ParaphraseTransducer(new File(path).toURI().toURL());
        field(Aligner.class, "paraphrase").set(aligner, table);
    }

    /** The jar's stdio answer to one line (statistics for SCORE, its error line otherwise). */
    static String answer(MeteorScorer scorer, Function<String, String> prepare, String line) {
        if (!(line.startsWith("SCORE") || line.startsWith("score"))) {
            return "Error: this process only answers SCORE lines";
        }
        String[] fields = line.split("\\|\\|\\|");
        if (fields.length < 3) {
            return "Error: specify hypothesis and at least one reference";
        }
        ArrayList<String> references = new ArrayList<>();
        for (int i = 1; i < fields.length - 1; i++) {
            references.add(prepare == null ? fields[i].trim() : prepare.apply(fields[i].trim()));
        }
        String hypothesis = fields[fields.length - 1].trim();
        hypothesis = prepare == null ? hypothesis : prepare.apply(hypothesis);
        return scorer.getMeteorStats(hypothesis, references).toString();
    }

    /** Print answers in input order, flushing whenever the next one is not ready yet. */
    private static void write(BlockingQueue<Future<String>> pending) {
        try (Writer out = new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8), 1 << 16)) {
            while (true) {
                Future<String> next = pending.peek();
                if (next == null || !next.isDone()) {
                    out.flush(); // the reader may be waiting for what is already written
                }
                next = pending.take();
                if (next == END) {
                    break;
                }
                out.write(next.get());
                out.write('\n');
            }
        } catch (Exception err) {
            err.printStackTrace();
            System.exit(1);
        }
    }
}
