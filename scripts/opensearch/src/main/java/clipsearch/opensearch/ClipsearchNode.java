package clipsearch.opensearch;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.ServiceLoader;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import java.util.function.Supplier;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.opensearch.action.ActionRequest;
import org.opensearch.action.admin.indices.create.CreateIndexRequest;
import org.opensearch.action.admin.indices.mapping.put.PutMappingRequest;
import org.opensearch.action.support.ActionFilter;
import org.opensearch.client.Client;
import org.opensearch.cluster.metadata.IndexMetadata;
import org.opensearch.cluster.metadata.IndexNameExpressionResolver;
import org.opensearch.cluster.metadata.Metadata;
import org.opensearch.cluster.service.ClusterService;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.regex.Regex;
import org.opensearch.common.settings.Settings;
import org.opensearch.common.xcontent.XContentHelper;
import org.opensearch.common.xcontent.json.JsonXContent;
import org.opensearch.core.action.ActionListener;
import org.opensearch.core.common.io.stream.NamedWriteableRegistry;
import org.opensearch.core.xcontent.NamedXContentRegistry;
import org.opensearch.env.Environment;
import org.opensearch.env.NodeEnvironment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.ActionPlugin;
import org.opensearch.plugins.ExtensiblePlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.repositories.RepositoriesService;
import org.opensearch.script.ScriptService;
import org.opensearch.threadpool.ThreadPool;
import org.opensearch.watcher.ResourceWatcherService;

/**
 * Embedded single-node OpenSearch with the k-NN plugin, for clipsearch's
 * development and tests (started by scripts/opensearch_node.py).
 *
 * <p>Everything comes from Maven Central jars: the server, the modules a
 * distribution would ship (netty4 transport, analysis-common, painless,
 * reindex, mapper-extras) and the k-NN plugin, all loaded as "classpath
 * plugins" through the protected {@code Node(Environment, Collection, boolean)}
 * constructor. No bootstrap checks and no security manager are installed.
 *
 * <p>Arguments are {@code key=value} node settings; they override the defaults
 * below. {@code path.home} is required.
 */
public final class ClipsearchNode {

    private static final String PAINLESS_PLUGIN = "org.opensearch.painless.PainlessPlugin";

    /** Plugins loaded by class name so the launcher compiles without the k-NN jar. */
    private static final String[] PLUGIN_CLASSES = {
        "org.opensearch.transport.Netty4Plugin",
        "org.opensearch.analysis.common.CommonAnalysisPlugin",
        PAINLESS_PLUGIN,
        "org.opensearch.index.reindex.ReindexPlugin",
        "org.opensearch.index.mapper.MapperExtrasPlugin",
        "org.opensearch.knn.plugin.KNNPlugin",
    };

    private ClipsearchNode() {}

    /** Exposes the protected constructor that accepts classpath plugins. */
    private static final class PluginNode extends Node {
        PluginNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    /**
     * Fails fast on k-NN mappings that would need the native faiss/nmslib
     * libraries (absent from the Maven zip): without this, such an index is
     * created fine and then its shard dies on the first refresh with an
     * UnsatisfiedLinkError while the client's request hangs. Checks
     * create-index and put-mapping requests on {@code index.knn: true} indices;
     * every knn_vector there must set {@code "method": {"engine": "lucene"}}.
     * (Mappings that arrive through index templates are not checked.)
     */
    public static final class LuceneEngineGuard extends Plugin implements ActionPlugin {
        private volatile ClusterService clusterService;

        @Override
        public Collection<Object> createComponents(Client client, ClusterService clusterService, ThreadPool threadPool,
            ResourceWatcherService resourceWatcherService, ScriptService scriptService,
            NamedXContentRegistry xContentRegistry, Environment environment, NodeEnvironment nodeEnvironment,
            NamedWriteableRegistry namedWriteableRegistry, IndexNameExpressionResolver indexNameExpressionResolver,
            Supplier<RepositoriesService> repositoriesServiceSupplier) {
            this.clusterService = clusterService;
            return List.of();
        }

        @Override
        public List<ActionFilter> getActionFilters() {
            return List.of(new ActionFilter.Simple() {
                @Override
                public int order() {
                    return Integer.MIN_VALUE;
                }

                @Override
                protected boolean apply(String action, ActionRequest request, ActionListener<?> listener) {
                    List<String> bad = new ArrayList<>();
                    if (request instanceof CreateIndexRequest) {
                        CreateIndexRequest create = (CreateIndexRequest) request;
                        Settings s = create.settings();
                        boolean knn = s.getAsBoolean("index.knn", s.getAsBoolean("knn", false));
                        if (knn && create.mappings() != null && !create.mappings().isEmpty()) {
                            findNonLucene(XContentHelper.convertToMap(JsonXContent.jsonXContent, create.mappings(), false), "", bad);
                        }
                    } else if (request instanceof PutMappingRequest) {
                        PutMappingRequest put = (PutMappingRequest) request;
                        if (put.source() != null && targetsKnnIndex(put)) {
                            findNonLucene(XContentHelper.convertToMap(JsonXContent.jsonXContent, put.source(), false), "", bad);
                        }
                    }
                    if (bad.isEmpty()) {
                        return true;
                    }
                    listener.onFailure(new IllegalArgumentException(
                        "knn_vector field(s) " + bad + " must use \"method\": {\"name\": \"hnsw\", \"engine\": \"lucene\", ...}: "
                            + "this OpenSearch node (scripts/opensearch_node.py) is built from Maven jars, "
                            + "without the k-NN native libraries that the faiss and nmslib engines need"));
                    return false;
                }
            });
        }

        private boolean targetsKnnIndex(PutMappingRequest put) {
            ClusterService cs = clusterService;
            if (cs == null) {
                return true;
            }
            Metadata metadata = cs.state().metadata();
            // Dynamic mapping updates (a new attribute in a document) name only
            // the concrete index: indices() is null there.
            List<String> names = new ArrayList<>();
            if (put.indices() != null) {
                names.addAll(List.of(put.indices()));
            }
            if (put.getConcreteIndex() != null) {
                names.add(put.getConcreteIndex().getName());
            }
            for (IndexMetadata index : metadata.indices().values()) {
                String indexName = index.getIndex().getName();
                for (String name : names) {
                    if (name.equals(indexName) || name.equals("_all") || Regex.simpleMatch(name, indexName)) {
                        if (index.getSettings().getAsBoolean("index.knn", false)) {
                            return true;
                        }
                    }
                }
            }
            return false;
        }

        private static void findNonLucene(Object node, String path, List<String> bad) {
            if (!(node instanceof Map)) {
                return;
            }
            Map<?, ?> map = (Map<?, ?>) node;
            if ("knn_vector".equals(map.get("type"))) {
                Object method = map.get("method");
                Object engine = method instanceof Map ? ((Map<?, ?>) method).get("engine") : null;
                if (!"lucene".equals(engine)) {
                    bad.add(path);
                }
            }
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                String key = String.valueOf(entry.getKey());
                boolean structural = key.equals("properties") || key.equals("fields") || key.equals("_doc");
                String child = structural ? path : (path.isEmpty() ? key : path + "." + key);
                findNonLucene(entry.getValue(), child, bad);
            }
        }
    }

    /**
     * Classpath plugins get no SPI extensions: PluginsService only wires
     * {@code extended.plugins} for plugins installed from a plugins/ directory.
     * So k-NN's painless allowlist (cosineSimilarity, l2Squared, ... in
     * painless scripts) would be missing. PainlessPlugin keeps its allowlists in
     * a static map, so feeding the extensions found on the classpath to a
     * throwaway instance before the node is built makes them visible to the
     * node's own instance.
     */
    private static void loadPainlessExtensions(Logger logger) throws ReflectiveOperationException {
        ExtensiblePlugin painless = (ExtensiblePlugin) Class.forName(PAINLESS_PLUGIN)
            .getConstructor().newInstance();
        ClassLoader loader = ClipsearchNode.class.getClassLoader();
        painless.loadExtensions(new ExtensiblePlugin.ExtensionLoader() {
            @Override
            public <T> List<T> loadExtensions(Class<T> extensionPointType) {
                List<T> found = new ArrayList<>();
                for (T extension : ServiceLoader.load(extensionPointType, loader)) {
                    logger.info("loaded {} [{}]", extensionPointType.getSimpleName(), extension.getClass().getName());
                    found.add(extension);
                }
                return found;
            }
        });
    }

    public static void main(String[] args) throws Exception {
        Settings.Builder builder = Settings.builder()
            .put("cluster.name", "clipsearch")
            .put("node.name", "node-1")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", "9250")
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("logger.level", "INFO");
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0) {
                System.err.println("expected key=value, got: " + arg);
                System.exit(2);
            }
            builder.put(arg.substring(0, eq), arg.substring(eq + 1));
        }
        Settings settings = builder.build();
        String home = settings.get("path.home");
        if (home == null) {
            System.err.println("path.home=<dir> is required");
            System.exit(2);
        }
        Path configDir = Paths.get(home).resolve("config");
        Files.createDirectories(configDir);

        String nodeName = settings.get("node.name");
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(nodeName);
        Environment environment =
            InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), configDir, () -> nodeName);
        // No log4j2.properties: log4j's default console appender, at logger.level.
        // opensearch_node.py sends stdout/stderr to nodes/<port>/node.log.
        LogConfigurator.configureWithoutConfig(environment.settings());
        Logger logger = LogManager.getLogger(ClipsearchNode.class);

        // -Dclipsearch.painless=false leaves painless out: it is the slowest
        // plugin to start (it builds its whole allowlist), and only scripts need it.
        boolean painless = Boolean.parseBoolean(System.getProperty("clipsearch.painless", "true"));
        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String name : PLUGIN_CLASSES) {
            if (painless || !name.equals(PAINLESS_PLUGIN)) {
                plugins.add(Class.forName(name).asSubclass(Plugin.class));
            }
        }
        plugins.add(LuceneEngineGuard.class);
        if (painless) {
            loadPainlessExtensions(logger);
        }

        Node node = new PluginNode(environment, plugins);
        CountDownLatch keepAlive = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                if (!node.awaitClose(20, TimeUnit.SECONDS)) {
                    logger.warn("node did not close within 20s");
                }
                logger.info("clipsearch node stopped");
            } catch (Exception e) {
                logger.warn("error while closing node", e);
            } finally {
                keepAlive.countDown();
                // log4j's own shutdown hook is disabled (-Dlog4j.shutdownHookEnabled=false)
                // so that the lines above still get logged.
                LogManager.shutdown();
            }
        }, "clipsearch-node-shutdown"));

        try {
            node.start();
        } catch (Throwable t) {
            logger.error("failed to start node", t);
            LogManager.shutdown();
            // Halt: System.exit would run the shutdown hook and wait on a half-started node.
            Runtime.getRuntime().halt(1);
        }
        logger.info("clipsearch node started: http://{}:{}",
            settings.get("network.host"), settings.get("http.port"));
        keepAlive.await();
    }
}
